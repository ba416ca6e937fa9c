// The broker: settings, virtual hosts, users, and the registries that span
// connections (direct reply-to). One Broker per process.
//
// Vhosts are records in the store's `meta` column:
//   'v' vhost name → description, tags, limits (max-connections, max-queues)
// Runtime parameters (shovels) are RuntimeParameters' (runtime_parameters.hpp).
// Users and permissions are AccessControl's (access_control.hpp). Without
// storage, or on the first start with an empty store, there is vhost "/"
// and the configured default user, administrator with full permissions on
// "/" (RabbitMQ's first start); after that the store's records win.
//
// Thread-safety: the broker thread only (net/ runs every connection of this
// broker on that thread).
#pragma once

#include <algorithm>
#include <map>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/access_control.hpp"
#include "broker/broker_stats.hpp"
#include "broker/durability.hpp"
#include "broker/runtime_parameters.hpp"
#include "broker/timer_queue.hpp"
#include "broker/vhost.hpp"

namespace sluice::broker {

class Channel;
class Session;

struct BrokerConfig {
    uint16_t channel_max = 2047;
    uint32_t frame_max = 131072;
    uint16_t heartbeat = 60;                     // seconds; 0 = off
    uint64_t max_message_size = 128ull << 20;    // RabbitMQ's default
    std::string default_user = "guest";
    std::string default_password = "guest";
    bool default_user_loopback_only = true;      // as RabbitMQ's loopback_users
    size_t output_high_watermark = 1u << 20;     // bytes queued for a socket before its consumers pause
    // Past either limit a queue keeps new messages only in the store (paging)
    // and reads them back as consumers drain it. Needs durable storage.
    size_t queue_memory_messages = 8192;
    size_t queue_memory_bytes = 8u << 20;
    // Past this many bytes of message bodies held in memory by all queues
    // together, every queue pages new messages too.
    size_t message_memory_limit = 256u << 20;
    // Publishers stop being read while this many bytes wait for the store
    // behind a commit in flight (a disk slower than the publishers).
    size_t store_backlog_limit = 16u << 20;
    // A deduplication window keeps at most this many keys in memory (the
    // most recent); a durable window's older keys are looked up on disk off
    // the broker thread, a transient window forgets them (docs/deduplication.md).
    uint64_t dedup_memory_keys = 65536;
    // Open (past connection.open) AMQP connections allowed; 0 = no limit.
    // Beyond it connection.open is refused with 530, as RabbitMQ's connection_max.
    uint32_t max_connections = 0;
    // A channel whose oldest unacked delivery is older than this is closed
    // with 406 and its unacked messages requeued (RabbitMQ's consumer_timeout).
    // 0 = no limit.
    uint32_t consumer_timeout_ms = 1800000;
};

// What the API shows and changes of a vhost besides its contents.
struct VHostSettings {
    std::string description;
    std::vector<std::string> tags;
    VHostLimits limits;
};

// What the resource alarms watch, as net/ measured it last (0 = unknown).
struct ResourceReadings {
    uint64_t memory_used = 0;      // resident set size, bytes
    uint64_t memory_limit = 0;     // the memory high watermark, bytes
    uint64_t disk_free = 0;        // free bytes on the data dir's volume
    uint64_t disk_free_limit = 0;  // below it the disk alarm is on
};

// Resource alarms, as RabbitMQ names them.
enum class Alarm : uint8_t { memory = 1, disk = 2 };

class Broker {
public:
    explicit Broker(BrokerConfig config = {});
    ~Broker();

    const BrokerConfig& config() const { return config_; }
    // Limits that may change while running (sluiced reloads them on SIGHUP);
    // they apply to what happens next, not to what is already open.
    void set_max_connections(uint32_t n) { config_.max_connections = n; }
    void set_consumer_timeout_ms(uint32_t ms) { config_.consumer_timeout_ms = ms; }
    VHost* find_vhost(std::string_view name);
    // Every vhost, ordered by name.
    std::vector<VHost*> vhosts() const;
    const VHostSettings* vhost_settings(std::string_view name) const;
    // Creates the vhost (or updates its description and tags); written to
    // the store. Returns it.
    VHost* put_vhost(std::string_view name, std::string description, std::vector<std::string> tags);
    // Deletes a vhost: its connections are closed (320 CONNECTION_FORCED),
    // its queues (with their messages), exchanges, bindings and permissions
    // go. False if there was none.
    bool delete_vhost(std::string_view name);
    // RabbitMQ's vhost limits by name ("max-connections", "max-queues");
    // value < 0 removes the limit. False for an unknown vhost.
    bool set_vhost_limits(std::string_view name, const VHostLimits& limits);
    // Deletes a user (and its permissions); its connections are closed
    // (320 CONNECTION_FORCED), as RabbitMQ does. False if there was none.
    bool delete_user(std::string_view name);
    AccessControl& access_control() { return access_; }
    // RabbitMQ's runtime parameters (shovels), durable.
    RuntimeParameters& parameters() { return parameters_; }
    const AccessControl& access_control() const { return access_; }
    BrokerStats& stats() { return stats_; }
    Durability& durability() { return durability_; }
    // Durable storage: without it the broker keeps everything in memory.
    // `executor` brings storage completions back to the broker thread.
    void attach_storage(storage::Store* store, Executor* executor) { durability_.attach(store, executor); }
    // Loads durable topology and messages (after attach_storage, before
    // serving); what it found stays readable for metrics.
    RecoveryStats recover();
    const RecoveryStats& recovery_stats() const { return recovery_; }
    uint64_t next_queue_id() { return ++last_queue_id_; }
    // A coarse clock (Unix seconds) that net/ advances once a second, so the
    // publish path reads a field instead of the system clock.
    uint32_t now_s() const { return now_s_; }
    // Advances the clock; checks every channel's oldest unacked delivery
    // against the consumer timeout.
    void tick(uint32_t unix_seconds);
    // Wall-clock Unix milliseconds, for TTLs and expiry (stored, so not a
    // steady clock). A test may substitute its own clock.
    uint64_t now_ms() const { return test_clock_ms_ ? test_clock_ms_ : system_now_ms(); }
    void set_test_clock_ms(uint64_t ms) { test_clock_ms_ = ms; }
    static uint64_t system_now_ms();
    TimerQueue& timers() { return timers_; }
    // Bytes of message bodies that queues hold in memory (ready messages).
    size_t message_memory() const { return message_memory_; }
    void add_message_memory(size_t n) { message_memory_ += n; }
    void sub_message_memory(size_t n) { message_memory_ -= std::min(message_memory_, n); }
    void saw_queue_id(uint64_t id) { last_queue_id_ = std::max(last_queue_id_, id); }

    enum class Login { ok, bad_credentials, loopback_only };
    // Whether user/password may log in from this peer: the password must
    // match, and the default user comes only from loopback unless
    // default_user_loopback_only is off (RabbitMQ's loopback_users).
    Login login(std::string_view user, std::string_view password, bool from_loopback) const;
    bool authenticate(std::string_view user, std::string_view password, bool from_loopback) const {
        return login(user, password, from_loopback) == Login::ok;
    }
    // The same without a password, for EXTERNAL (a verified client
    // certificate named the user): the user must exist.
    Login login_external(std::string_view user, bool from_loopback) const;
    // connection.open of `vhost` by `user`: 530 NOT_ALLOWED when the vhost is
    // unknown, the user has no permissions in it, or its max-connections is
    // reached (`open_sessions` connections to it exist).
    Status check_vhost_open(std::string_view user, std::string_view vhost) const;
    // queue.declare of a new queue: 406 when the vhost's max-queues is reached.
    Status check_queue_limit(const VHost& vhost, std::string_view queue) const;

    uint64_t next_connection_id() { return ++last_connection_id_; }

    // Resource alarms (memory, disk). While any is on, publishing connections
    // are blocked (RabbitMQ's connection.blocked): connection.blocked goes out
    // when the first alarm sets, connection.unblocked when the last clears.
    void set_alarm(Alarm alarm, bool on);
    void set_disk_alarm(bool on) { set_alarm(Alarm::disk, on); }
    bool alarm_active() const { return alarms_ != 0; }
    bool alarm_active(Alarm alarm) const { return (alarms_ & static_cast<uint8_t>(alarm)) != 0; }
    // RabbitMQ's text: "low on memory", "low on disk", "low on memory & disk".
    std::string alarm_reason() const;
    const ResourceReadings& resources() const { return resources_; }
    void set_resource_readings(const ResourceReadings& r) { resources_ = r; }
    // Flow control: a publishing session found the store backlogged and
    // stopped reading; it is read again once the store catches up.
    void pause_for_store(Session* s) { store_paused_.push_back(s); }
    // Connections past connection.open (what max_connections limits).
    size_t open_connection_count() const { return open_connections_; }
    void connection_opened() { ++open_connections_; }
    void connection_closed() { open_connections_ -= open_connections_ > 0 ? 1 : 0; }
    void register_session(Session* s) { sessions_.push_back(s); }
    void unregister_session(Session* s);
    size_t session_count() const { return sessions_.size(); }
    // Every session (AMQP connection), for introspection (management API).
    const std::vector<Session*>& sessions() const { return sessions_; }
    // prefix + 22 URL-safe characters from the CSPRNG ("amq.gen-…", "amq.ctag-…").
    std::string unique_name(std::string_view prefix);

    // Direct reply-to: a channel consuming from amq.rabbitmq.reply-to gets a
    // token; replies published to "amq.rabbitmq.reply-to.<token>" go to it.
    std::string register_reply_channel(Channel* channel);
    void unregister_reply_channel(std::string_view token);
    Channel* find_reply_channel(std::string_view token) const;

private:
    BrokerConfig config_;
    BrokerStats stats_;
    Durability durability_;  // before the vhosts: queues reach it when they go
    uint64_t last_queue_id_ = 0;
    size_t message_memory_ = 0;
    uint32_t now_s_ = static_cast<uint32_t>(std::time(nullptr));
    uint64_t test_clock_ms_ = 0;
    TimerQueue timers_;
    void write_vhost(std::string_view name, const VHostSettings& settings);
    // Vhost "/" and the default user, administrator with full permissions there.
    void create_defaults();
    // The records of the store replace the defaults (or become them, on a
    // first start).
    void recover_access();

    struct VHostEntry {
        std::unique_ptr<VHost> vhost;
        VHostSettings settings;
    };
    AccessControl access_{durability_};
    RuntimeParameters parameters_{durability_};
    StringMap<VHostEntry> vhosts_;
    StringMap<Channel*> reply_channels_;
    uint64_t last_connection_id_ = 0;
    std::vector<Session*> sessions_;
    std::vector<Session*> store_paused_;
    void on_store_caught_up();
    uint8_t alarms_ = 0;  // Alarm bits
    ResourceReadings resources_;
    size_t open_connections_ = 0;
    RecoveryStats recovery_;
};

}  // namespace sluice::broker
