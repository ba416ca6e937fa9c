// The resource alarms' eyes: once a second the server asks it to measure the
// process's resident memory (/proc/self/statm) and the free space on the data
// directory's volume (statvfs), and it sets or clears the broker's memory and
// disk alarms (RabbitMQ's vm_memory_high_watermark and disk_free_limit).
//
// Thread-safety: the server's thread only.
#pragma once

#include <cstdint>
#include <string>

namespace sluice::broker {
class Broker;
}

namespace sluice::net {

struct ResourceLimits {
    // Above this many resident bytes the memory alarm is on.
    uint64_t memory_limit = UINT64_MAX;
    // Below this many free bytes on disk_path's volume the disk alarm is on;
    // an empty path means no disk check.
    std::string disk_path;
    uint64_t disk_free_limit = 50u << 20;
};

class ResourceMonitor {
public:
    explicit ResourceMonitor(ResourceLimits limits) : limits_(std::move(limits)) {}

    // New thresholds (a config reload); the next check() applies them.
    void set_limits(uint64_t memory_limit, uint64_t disk_free_limit);
    const ResourceLimits& limits() const { return limits_; }
    // Measures, sets or clears the alarms (logging each change), and leaves
    // the readings in Broker::resources() for the API and metrics.
    void check(broker::Broker& broker);

private:
    ResourceLimits limits_;
};

// Physical memory, or the cgroup's memory.max when that is lower (a
// container): what a watermark fraction is a fraction of.
uint64_t total_memory_bytes();
// Resident set size of this process (0 if /proc cannot be read).
uint64_t resident_memory_bytes();

}  // namespace sluice::net
