// CRC-32C (Castagnoli), with the SSE 4.2 instruction where the CPU has it.
//
// Debian's RocksDB is built without that instruction: its checksum of every
// WAL record and table block is table-driven, ~8 % of a single node's CPU
// under load and 22 % of a cluster follower's. sluiced links RocksDB
// statically and the link wraps RocksDB's rocksdb::crc32c::Extend (every
// caller outside RocksDB's own crc32c.o: the WAL writer and reader, block
// checksums, file checksums) to this function: the same CRC, the same bytes on
// disk, computed 8 bytes per instruction (storage/CMakeLists.txt).
#pragma once

#include <cstddef>
#include <cstdint>

namespace sluice::storage {

// CRC-32C of `n` bytes continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// The table-driven path crc32c() takes on a CPU without SSE 4.2 (tests
// compare the two here, where the instruction exists).
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

}  // namespace sluice::storage
