// Group commit: every durable change of one turn of the owner's event loop
// goes into one gathering batch. When no commit is in flight, the batch is
// handed to the store's commit thread at the end of the turn; while it
// syncs, the next batch gathers. after_sync() callbacks run on the owner's
// thread once everything written before them is synced (or failed) — the
// broker's publisher confirms and durable -oks.
//
// Batches form one ordered stream (Store::set_batch_listener), numbered by
// generation here: every after_sync() caller that waits for the same
// generation may share one callback.
//
// A failed commit: its waiters hear `false`; the store writes that batch
// again ahead of the next one (Store::commit), and until a commit succeeds
// after_sync() waits for one (nothing is acknowledged before memory and
// disk agree again). If the store cannot reopen its database (it tries on its
// commit thread, before the next commit), on_store_lost runs once, as that
// commit's failure comes back: the owner must stop serving.
//
// Writes kept outside the batch until the commit (queue logs: see
// storage/queue_log.hpp) join through the hooks.
//
// Threads: the owner's thread only; the commit thread's result comes back
// through `post`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "storage/store.hpp"

namespace sluice::storage {

class GroupCommit {
public:
    // Runs a function on the owner's thread, later (never inline).
    using Post = std::function<void(std::function<void()>)>;
    struct Hooks {
        // Writes waiting outside the batch (they make a commit worth it),
        // and their bytes (back-pressure).
        std::function<bool()> has_open_writes;
        std::function<size_t()> open_bytes;
        // The end of a turn, before anything is committed (spill runs are
        // sealed here: they are written apart from the batch).
        std::function<void()> end_of_turn;
        // Moves the waiting writes into the batch about to be committed.
        std::function<void(Batch&)> flush;
        // That commit's result, before its waiters run.
        std::function<void(bool ok)> committed;
    };

    GroupCommit(Store& store, Post post, Hooks hooks);
    ~GroupCommit();
    GroupCommit(const GroupCommit&) = delete;
    GroupCommit& operator=(const GroupCommit&) = delete;

    // The gathering batch: add writes, then schedule().
    Batch& batch() { return batch_; }
    // Commit what gathered at the end of this turn.
    void schedule();

    // Runs fn(ok) once everything written so far is synced (or failed).
    void after_sync(std::function<void(bool ok)> fn);
    // The generation a call to after_sync() now would wait for: the
    // gathering one if it holds writes (or must write a failed batch
    // again), else the one in flight, else 0 (it would run at once).
    uint64_t pending_generation() const;

    // Back-pressure: the batch gathering while a commit is in flight holds
    // at least `limit` bytes. Once a commit takes it, on_caught_up runs.
    bool backlogged() const;
    void set_backlog_limit(size_t limit, std::function<void()> on_caught_up);
    void set_on_store_lost(std::function<void(const std::string& why)> fn) { on_store_lost_ = std::move(fn); }

    // Graceful stop: waits for the commit in flight, writes (and syncs) what
    // gathered and any failed batch on this thread, then detaches: later
    // calls write nothing and after_sync() runs at once. True if every batch
    // is written (the in-flight one's callback may not have run: the owner's
    // loop is stopping, so the caller settles what a success would).
    bool shutdown();
    bool attached() const { return store_ != nullptr; }

private:
    bool gathering() const { return !batch_.empty() || hooks_.has_open_writes(); }
    void end_turn();
    void start_commit();
    void on_committed(const std::string& error);

    Store* store_;
    Post post_;
    Hooks hooks_;
    Batch batch_;
    std::vector<std::function<void(bool)>> waiters_;            // wait for batch_
    std::vector<std::function<void(bool)>> in_flight_waiters_;  // wait for the batch being synced
    bool commit_in_flight_ = false;
    bool commit_scheduled_ = false;
    bool write_failed_ = false;  // the last commit failed; the next writes it again
    bool store_lost_ = false;    // on_store_lost_ has run
    uint64_t gathering_generation_ = 1;
    uint64_t in_flight_generation_ = 0;
    size_t backlog_limit_ = SIZE_MAX;
    std::function<void()> on_caught_up_;
    std::function<void(const std::string&)> on_store_lost_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace sluice::storage
