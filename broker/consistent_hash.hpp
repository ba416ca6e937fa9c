// The choice a consistent-hash exchange (`x-consistent-hash`, RabbitMQ's
// rabbitmq_consistent_hash_exchange) makes: which one of its weighted
// destinations a hash key (routing key, header or property) goes to.
//
// Semantics, as the plugin documents them: a destination bound with weight w
// owns w points ("buckets") of the hash space; each key lands on one point,
// so over many distinct keys a destination's share is w / (sum of weights);
// a key goes to the same destination for as long as the bindings stay; a new
// destination takes keys only from the others, about its share of them.
//
// How: weighted rendezvous hashing. Each destination draws, per key, the best
// of its w points' scores (in one step: -ln(u) / w, u uniform in (0,1) from
// hash(key, destination)); the lowest score wins. That is the same
// distribution as w points per weight on a circle, without the circle's
// uneven arcs (with a few hundred points per destination a circle is still
// off by several percent; the plugin avoids that with jump consistent hashing
// over bucket numbers, whose assignment depends on the order of bindings).
// Here a destination's scores depend only on its name and the key, so the
// mapping is the same after a restart, whatever order bindings come back in.
//
// Cost: O(destinations) per message (one hash mix and one log each); fine for
// the tens of queues such an exchange spreads over.
//
// Thread-safety: a plain value, owned by its exchange (broker thread).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "broker/stable_hash.hpp"  // stable_hash: keys and destinations

namespace sluice::broker {

// -ln(u), u uniform in (0, 1), drawn from the pair (key, destination).
double consistent_hash_score(uint64_t key_hash, uint64_t identity);

template <typename Dest>
class ConsistentHashRing {
public:
    // Adds `dest` with `weight` points; `identity` is a stable hash of its
    // name. A destination already present keeps its first weight (as the
    // plugin: a second binding to the same queue adds no points).
    void add(Dest dest, uint64_t identity, uint32_t weight) {
        for (const Member& m : members_)
            if (m.dest == dest) return;
        members_.push_back(Member{dest, identity, double(weight)});
    }
    void remove(Dest dest) {
        std::erase_if(members_, [&](const Member& m) { return m.dest == dest; });
    }
    bool empty() const { return members_.empty(); }
    size_t size() const { return members_.size(); }

    // The destination `key_hash` (stable_hash of the key) goes to; null
    // when there is none.
    const Dest* pick(uint64_t key_hash) const {
        const Member* best = nullptr;
        double best_score = 0;
        for (const Member& m : members_) {
            double score = consistent_hash_score(key_hash, m.identity) / m.weight;
            // Ties (all but impossible) go to the lower identity, not to the
            // binding order.
            if (!best || score < best_score || (score == best_score && m.identity < best->identity)) {
                best = &m;
                best_score = score;
            }
        }
        return best ? &best->dest : nullptr;
    }

private:
    struct Member {
        Dest dest;
        uint64_t identity;
        double weight;
    };
    std::vector<Member> members_;
};

}  // namespace sluice::broker
