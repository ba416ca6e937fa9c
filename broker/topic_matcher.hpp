// Topic-exchange matching: a trie over the words of binding patterns, with
// RabbitMQ's semantics (rabbit_db_topic_exchange.erl / rabbit_exchange_type_topic.erl):
//
//   * a key or pattern is split on '.'; empty words are words ("a..b" has three,
//     "a." has two, "." has two) EXCEPT that the empty string has zero words;
//   * in a pattern, the word "*" matches exactly one word and "#" zero or more;
//     any other word (including "a*", "##") matches only itself;
//   * in a routing key every word is literal: a key word "*" or "#" is matched
//     by a pattern "*" / "#" (as any word is) but by no literal pattern word.
//
// Matching walks the trie as an NFA over states (node, words consumed). Each
// '#' node remembers, per match call, the smallest position it was entered at;
// since entering a '#' node at position p covers every position >= p, any later
// entry at p' >= that is redundant. So every (node, position) state is expanded
// at most once and the cost is bounded by (trie nodes reachable) x (key words),
// even for hostile patterns such as "#.#.#.#.#.#.#.#.x".
//
// Thread-safety: match() is const and may run concurrently with other match()
// calls (its scratch space is thread_local, re-entrant: a callback may call
// match() again); add()/remove() need exclusive access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sluice::broker {

namespace topic_detail {

// Splits like RabbitMQ's split_topic_key: "" -> no words; otherwise N dots
// give N+1 (possibly empty) words.
inline void split_words(std::string_view key, std::vector<std::string_view>& out) {
    out.clear();
    if (key.empty()) return;
    size_t start = 0;
    for (;;) {
        size_t dot = key.find('.', start);
        if (dot == std::string_view::npos) {
            out.push_back(key.substr(start));
            return;
        }
        out.push_back(key.substr(start, dot - start));
        start = dot + 1;
    }
}

struct WordHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace topic_detail

// Matches AMQP topic routing keys against binding patterns: words separated by '.', '*' = exactly one word,
// '#' = zero or more words; empty words are words ("a..b" has three). Exactly RabbitMQ's semantics.
template <typename Dest>  // Dest: cheap to copy, ==, std::hash (e.g. a pointer)
class TopicMatcher {
public:
    TopicMatcher() = default;
    TopicMatcher(const TopicMatcher&) = delete;
    TopicMatcher& operator=(const TopicMatcher&) = delete;
    TopicMatcher(TopicMatcher&&) = default;
    TopicMatcher& operator=(TopicMatcher&&) = default;

    // Idempotent: adding the same (pattern, dest) twice keeps one binding.
    void add(std::string_view pattern, Dest dest) {
        Node* node = &root_;
        size_t start = 0;
        if (!pattern.empty()) {
            for (;;) {
                size_t dot = pattern.find('.', start);
                std::string_view word = pattern.substr(start, dot == std::string_view::npos ? std::string_view::npos
                                                                                            : dot - start);
                node = child_for_add(node, word);
                if (dot == std::string_view::npos) break;
                start = dot + 1;
            }
        }
        if (node->dests.add(dest)) ++size_;
    }

    // Returns whether the binding existed.
    bool remove(std::string_view pattern, Dest dest) {
        // The path from the root, to prune nodes left empty.
        std::vector<std::pair<Node*, std::string_view>> path;
        Node* node = &root_;
        size_t start = 0;
        if (!pattern.empty()) {
            for (;;) {
                size_t dot = pattern.find('.', start);
                std::string_view word = pattern.substr(start, dot == std::string_view::npos ? std::string_view::npos
                                                                                            : dot - start);
                Node* next = child(node, word);
                if (!next) return false;
                path.emplace_back(node, word);
                node = next;
                if (dot == std::string_view::npos) break;
                start = dot + 1;
            }
        }
        if (!node->dests.remove(dest)) return false;
        --size_;
        // Prune: erase every node that no longer holds bindings or children.
        while (!path.empty() && node->is_empty()) {
            auto [parent, word] = path.back();
            path.pop_back();
            erase_child(parent, word);
            node = parent;
        }
        return true;
    }

    // Calls on_match(dest) for each destination whose pattern matches; each dest AT MOST ONCE per call.
    template <typename F>
    void match(std::string_view routing_key, F&& on_match) const {
        ScratchLease lease;
        Scratch& s = lease.get();
        s.begin_call(hash_ids_.next);
        topic_detail::split_words(routing_key, s.words);
        const size_t n = s.words.size();

        s.stack.push_back(Item{&root_, 0});
        while (!s.stack.empty()) {
            Item it = s.stack.back();
            s.stack.pop_back();
            const Node* node = it.node;
            if (node->hash_id == 0) {
                expand(s, node, it.pos, n);
                continue;
            }
            // A '#' node entered at it.pos: it stands at every position in
            // [it.pos, n]; skip those already covered by an earlier entry.
            auto& fr = s.frontier[node->hash_id];
            size_t end = n + 1;
            if (fr.gen == s.gen) {
                if (fr.min_pos <= it.pos) continue;
                end = fr.min_pos;
            }
            fr.gen = s.gen;
            fr.min_pos = it.pos;
            for (size_t q = it.pos; q < end; ++q) expand(s, node, q, n);
        }

        const auto& reported = s.reported;
        if (reported.size() == 1) {
            // One node: its destinations are distinct already.
            for (const Dest& d : reported[0]->dests.items) on_match(d);
            return;
        }
        for (const Node* node : reported)
            for (const Dest& d : node->dests.items)
                if (s.seen_insert(d)) on_match(d);
    }

    size_t size() const { return size_; }  // number of (pattern, dest) bindings
    bool empty() const { return size_ == 0; }

    // Number of trie nodes including the root (for tests: pruning leaves only the root).
    size_t node_count() const { return count_nodes(&root_); }

private:
    // Destinations bound at one node with the same pattern: a vector (fast to
    // iterate while matching), indexed by a hash map once it grows large so that
    // add/remove stay O(1) with a big fan-out.
    struct DestSet {
        static constexpr size_t kIndexAbove = 16;
        std::vector<Dest> items;
        std::unique_ptr<std::unordered_map<Dest, size_t>> index;

        size_t find(const Dest& d) const {
            if (index) {
                auto it = index->find(d);
                return it == index->end() ? items.size() : it->second;
            }
            for (size_t i = 0; i < items.size(); ++i)
                if (items[i] == d) return i;
            return items.size();
        }
        bool add(const Dest& d) {
            if (find(d) != items.size()) return false;
            items.push_back(d);
            if (index) {
                index->emplace(d, items.size() - 1);
            } else if (items.size() > kIndexAbove) {
                index = std::make_unique<std::unordered_map<Dest, size_t>>();
                index->reserve(items.size() * 2);
                for (size_t i = 0; i < items.size(); ++i) index->emplace(items[i], i);
            }
            return true;
        }
        bool remove(const Dest& d) {
            size_t i = find(d);
            if (i == items.size()) return false;
            if (index) index->erase(d);
            if (i + 1 != items.size()) {
                items[i] = items.back();
                if (index) (*index)[items[i]] = i;
            }
            items.pop_back();
            if (items.empty()) {
                index.reset();
                items.shrink_to_fit();
            }
            return true;
        }
        bool empty() const { return items.empty(); }
    };

    struct Node {
        std::unordered_map<std::string, std::unique_ptr<Node>, topic_detail::WordHash, std::equal_to<>> children;
        std::unique_ptr<Node> star;  // the word "*"
        std::unique_ptr<Node> hash;  // the word "#"
        DestSet dests;
        uint32_t hash_id = 0;  // non-zero iff this node is reached by a "#" edge

        bool is_empty() const { return dests.empty() && children.empty() && !star && !hash; }
    };

    // Dense ids for '#' nodes, so the per-call frontier is a plain array.
    struct HashIds {
        uint32_t next = 1;  // ids in use are < next; 0 means "not a '#' node"
        std::vector<uint32_t> free;
        uint32_t acquire() {
            if (!free.empty()) {
                uint32_t id = free.back();
                free.pop_back();
                return id;
            }
            return next++;
        }
        void release(uint32_t id) { free.push_back(id); }
    };

    struct Item {
        const Node* node;
        size_t pos;  // words consumed
    };

    // Per-thread, per-nesting-level reusable buffers: no allocation per match
    // once they have grown to the working size.
    struct Scratch {
        struct Frontier {
            uint32_t gen = 0;
            size_t min_pos = 0;
        };
        struct Slot {
            uint32_t gen = 0;
            uint32_t idx = 0;
        };
        uint32_t gen = 0;
        std::vector<std::string_view> words;
        std::vector<Item> stack;
        std::vector<Frontier> frontier;  // indexed by hash_id
        std::vector<const Node*> reported;
        std::vector<Slot> table;  // open addressing over `seen`
        std::vector<Dest> seen;

        void begin_call(uint32_t hash_id_bound) {
            if (++gen == 0) {  // wrapped: forget every stamp
                for (auto& f : frontier) f.gen = 0;
                for (auto& t : table) t.gen = 0;
                gen = 1;
            }
            if (frontier.size() < hash_id_bound) frontier.resize(hash_id_bound);
            stack.clear();
            reported.clear();
            seen.clear();
        }

        // Returns true if d was not seen yet in this call (and records it).
        bool seen_insert(const Dest& d) {
            if ((seen.size() + 1) * 2 > table.size()) grow();
            size_t mask = table.size() - 1;
            for (size_t i = std::hash<Dest>{}(d) & mask;; i = (i + 1) & mask) {
                Slot& slot = table[i];
                if (slot.gen != gen) {
                    slot.gen = gen;
                    slot.idx = static_cast<uint32_t>(seen.size());
                    seen.push_back(d);
                    return true;
                }
                if (seen[slot.idx] == d) return false;
            }
        }

        void grow() {
            size_t cap = table.empty() ? 64 : table.size() * 2;
            table.assign(cap, Slot{});
            size_t mask = cap - 1;
            for (uint32_t k = 0; k < seen.size(); ++k) {
                size_t i = std::hash<Dest>{}(seen[k]) & mask;
                while (table[i].gen == gen) i = (i + 1) & mask;
                table[i] = Slot{gen, k};
            }
        }
    };

    class ScratchLease {
    public:
        ScratchLease() {
            auto& p = pool();
            if (p.depth == p.items.size()) p.items.push_back(std::make_unique<Scratch>());
            s_ = p.items[p.depth++].get();
        }
        ~ScratchLease() { --pool().depth; }
        ScratchLease(const ScratchLease&) = delete;
        ScratchLease& operator=(const ScratchLease&) = delete;
        Scratch& get() { return *s_; }

    private:
        struct Pool {
            std::vector<std::unique_ptr<Scratch>> items;
            size_t depth = 0;
        };
        static Pool& pool() {
            static thread_local Pool p;
            return p;
        }
        Scratch* s_;
    };

    // State (node, pos) where node is at exactly pos words consumed.
    static void expand(Scratch& s, const Node* node, size_t pos, size_t n) {
        if (node->hash) s.stack.push_back(Item{node->hash.get(), pos});  // '#' matching zero words here
        if (pos == n) {
            if (!node->dests.empty()) s.reported.push_back(node);
            return;
        }
        if (node->star) s.stack.push_back(Item{node->star.get(), pos + 1});
        if (!node->children.empty()) {
            auto it = node->children.find(s.words[pos]);
            if (it != node->children.end()) s.stack.push_back(Item{it->second.get(), pos + 1});
        }
    }

    Node* child(Node* node, std::string_view word) const {
        if (word == "*") return node->star.get();
        if (word == "#") return node->hash.get();
        auto it = node->children.find(word);
        return it == node->children.end() ? nullptr : it->second.get();
    }

    Node* child_for_add(Node* node, std::string_view word) {
        if (word == "*") {
            if (!node->star) node->star = std::make_unique<Node>();
            return node->star.get();
        }
        if (word == "#") {
            if (!node->hash) {
                node->hash = std::make_unique<Node>();
                node->hash->hash_id = hash_ids_.acquire();
            }
            return node->hash.get();
        }
        auto it = node->children.find(word);
        if (it == node->children.end()) it = node->children.emplace(std::string(word), std::make_unique<Node>()).first;
        return it->second.get();
    }

    void erase_child(Node* parent, std::string_view word) {
        if (word == "*") {
            parent->star.reset();
        } else if (word == "#") {
            hash_ids_.release(parent->hash->hash_id);
            parent->hash.reset();
        } else {
            auto it = parent->children.find(word);
            if (it != parent->children.end()) parent->children.erase(it);
        }
    }

    static size_t count_nodes(const Node* node) {
        size_t c = 1;
        for (const auto& [w, ch] : node->children) c += count_nodes(ch.get());
        if (node->star) c += count_nodes(node->star.get());
        if (node->hash) c += count_nodes(node->hash.get());
        return c;
    }

    Node root_;
    HashIds hash_ids_;
    size_t size_ = 0;
};

}  // namespace sluice::broker
