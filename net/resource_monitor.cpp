#include "net/resource_monitor.hpp"

#include <malloc.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "broker/broker.hpp"

namespace sluice::net {

uint64_t resident_memory_bytes() {
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    const int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    return n == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

uint64_t total_memory_bytes() {
    const long pages = sysconf(_SC_PHYS_PAGES);
    uint64_t total = pages > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
    // cgroup v2: "max" or a byte count.
    if (FILE* f = std::fopen("/sys/fs/cgroup/memory.max", "r")) {
        unsigned long long limit = 0;
        if (std::fscanf(f, "%llu", &limit) == 1 && limit > 0 && (total == 0 || limit < total)) total = limit;
        std::fclose(f);
    }
    return total;
}

void ResourceMonitor::set_limits(uint64_t memory_limit, uint64_t disk_free_limit) {
    limits_.memory_limit = memory_limit;
    limits_.disk_free_limit = disk_free_limit;
}

void ResourceMonitor::check(broker::Broker& broker) {
    using broker::Alarm;
    broker::ResourceReadings r = broker.resources();
    r.memory_limit = limits_.memory_limit;
    r.disk_free_limit = limits_.disk_free_limit;

    r.memory_used = resident_memory_bytes();
    if (r.memory_used > limits_.memory_limit) {
        // Over the watermark: hand what the allocator keeps of freed memory
        // back to the system before judging, or a drained backlog would
        // hold the alarm on (glibc keeps freed blocks for reuse).
        malloc_trim(0);
        r.memory_used = resident_memory_bytes();
    }
    if (r.memory_used != 0) {
        const bool high = r.memory_used > limits_.memory_limit;
        if (high != broker.alarm_active(Alarm::memory))
            std::cerr << "sluiced: memory alarm " << (high ? "set" : "cleared") << ": " << r.memory_used
                      << " bytes resident, high watermark " << limits_.memory_limit << std::endl;
        broker.set_alarm(Alarm::memory, high);
    }

    struct statvfs st {};
    if (!limits_.disk_path.empty() && statvfs(limits_.disk_path.c_str(), &st) == 0) {
        r.disk_free = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
        const bool low = r.disk_free < limits_.disk_free_limit;
        if (low != broker.alarm_active(Alarm::disk))
            std::cerr << "sluiced: disk alarm " << (low ? "set" : "cleared") << ": " << r.disk_free
                      << " bytes free, limit " << limits_.disk_free_limit << std::endl;
        broker.set_alarm(Alarm::disk, low);
    }
    broker.set_resource_readings(r);
}

}  // namespace sluice::net
