// Bytes from the kernel's generator (getrandom(2)), for what must not be
// guessable: password salts, reply-to tokens, server-chosen names.
// Not OpenSSL's RAND_bytes: its first use loads OpenSSL 3's default
// provider, +2 MiB resident (broker/password_hash.cpp).
#pragma once

#include <sys/random.h>

#include <cerrno>
#include <cstddef>

namespace sluice::broker {

// Fills `n` bytes. A request this small is never cut short once the
// kernel's pool is ready; a signal may interrupt the wait before that, and
// the call is made again. False only if there is no generator at all.
inline bool random_bytes(unsigned char* out, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(out + got, n - got, 0);
        if (r > 0) got += size_t(r);
        else if (r < 0 && errno != EINTR) return false;
    }
    return true;
}

}  // namespace sluice::broker
