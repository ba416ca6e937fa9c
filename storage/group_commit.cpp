#include "storage/group_commit.hpp"

#include <cstdint>

namespace sluice::storage {

GroupCommit::GroupCommit(Store& store, Post post, Hooks hooks)
    : store_(&store), post_(std::move(post)), hooks_(std::move(hooks)), batch_(store.new_batch()) {}

GroupCommit::~GroupCommit() { *alive_ = false; }

void GroupCommit::schedule() {
    if (commit_scheduled_ || !store_) return;
    commit_scheduled_ = true;
    // At the end of this turn of the event loop: everything the current
    // reads produce joins one batch.
    post_([this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired()) return;
        commit_scheduled_ = false;
        end_turn();
    });
}

void GroupCommit::end_turn() {
    if (!store_) return;
    hooks_.end_of_turn();
    start_commit();
}

void GroupCommit::after_sync(std::function<void(bool)> fn) {
    if (!store_ || (!gathering() && !commit_in_flight_ && !write_failed_)) {
        fn(true);  // nothing unsynced is ahead of this
        return;
    }
    if (!gathering() && commit_in_flight_) {
        in_flight_waiters_.push_back(std::move(fn));
        return;
    }
    waiters_.push_back(std::move(fn));
    // After a failed write nothing may be acknowledged until it is written
    // again: this waits for a commit that does that.
    if (!gathering()) schedule();
}

uint64_t GroupCommit::pending_generation() const {
    if (!store_) return 0;
    if (gathering() || (write_failed_ && !commit_in_flight_)) return gathering_generation_;
    return commit_in_flight_ ? in_flight_generation_ : 0;
}

bool GroupCommit::backlogged() const {
    return store_ != nullptr && batch_.bytes() + hooks_.open_bytes() >= backlog_limit_;
}

void GroupCommit::set_backlog_limit(size_t limit, std::function<void()> on_caught_up) {
    backlog_limit_ = limit;
    on_caught_up_ = std::move(on_caught_up);
}

void GroupCommit::start_commit() {
    if (!store_ || commit_in_flight_ || !(gathering() || (write_failed_ && !waiters_.empty()))) return;
    hooks_.flush(batch_);
    if (batch_.empty() && !write_failed_) {
        // Everything gathered was undone before it was written (a consumer
        // that keeps up): nothing to write, nothing unsynced ahead.
        std::vector<std::function<void(bool)>> done;
        done.swap(waiters_);
        ++gathering_generation_;
        for (auto& fn : done) fn(true);
        return;
    }
    commit_in_flight_ = true;
    in_flight_waiters_ = std::move(waiters_);
    waiters_.clear();
    Batch batch = std::move(batch_);
    batch_ = store_->new_batch();
    in_flight_generation_ = gathering_generation_++;
    // The callback runs on the commit thread: it touches nothing of this
    // object but hands the result to the owner's thread (shutdown() waits
    // for it before the owner goes away).
    store_->commit(std::move(batch), [this, post = post_, alive = std::weak_ptr<bool>(alive_)](std::string error) {
        post([this, alive, error = std::move(error)] {
            if (!alive.expired()) on_committed(error);
        });
    });
}

void GroupCommit::on_committed(const std::string& error) {
    commit_in_flight_ = false;
    write_failed_ = !error.empty();
    if (write_failed_ && store_ && !store_lost_ && store_->down() && on_store_lost_) {
        store_lost_ = true;
        // The database could not be reopened after a failed write: nothing
        // can be stored or read back. Stop before anything answers from it
        // (the waiters below hear that their commit failed).
        on_store_lost_("the store could not be reopened after a failed write");
    }
    hooks_.committed(!write_failed_);
    std::vector<std::function<void(bool)>> done;
    done.swap(in_flight_waiters_);
    for (auto& fn : done) fn(!write_failed_);
    start_commit();  // the batch that gathered meanwhile
    if (on_caught_up_ && !backlogged()) on_caught_up_();
}

bool GroupCommit::shutdown() {
    bool ok = false;
    if (store_) {
        // Let the commit in flight finish (its callback posts to the owner,
        // which is still there), then write the gathering batch after it:
        // one ordered stream of batches to the end. The write happens even
        // when nothing gathered: the store writes a failed batch again with
        // it (the in-flight one's failure may not have reached us yet), and
        // its success means every batch is synced.
        store_->wait_idle();
        hooks_.flush(batch_);
        Batch batch = std::move(batch_);
        batch_ = store_->new_batch();
        ok = store_->commit_now(std::move(batch)).empty();
    }
    store_ = nullptr;
    waiters_.clear();
    in_flight_waiters_.clear();
    return ok;
}

}  // namespace sluice::storage
