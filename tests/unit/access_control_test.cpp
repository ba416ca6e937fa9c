// Users, vhosts, permissions and vhost limits through whole AMQP
// conversations (session_harness), and their records across a restart.
#include <unistd.h>

#include <filesystem>

#include "broker/executor.hpp"
#include "broker/vhost.hpp"
#include "session_harness.hpp"
#include "storage/store.hpp"

namespace sluice::test {
namespace {

namespace m = amqp::method;
using broker::Permission;

class AccessTest : public SessionTest {
protected:
    // alice may configure and read "alice.*", write "alice.*" and the default
    // exchange, read amq.fanout.
    void add_alice() {
        broker::User u;
        u.name = "alice";
        u.password_hash = broker::hash_password("pw");
        broker().access_control().put_user(u);
        ASSERT_FALSE(broker().access_control().set_permissions(
            "alice", "/", {"^alice\\.", "^(alice\\..*|amq\\.default)$", "^(alice\\..*|amq\\.fanout)$"}));
    }
    TestClient& alice() {
        ClientOptions o;
        o.user = "alice";
        o.password = "pw";
        return connect(o);
    }
    // Sends a method and expects channel.close 403 with exactly this text.
    template <typename M>
    void expect_refused(TestClient& c, const M& method, const std::string& text, uint16_t code = 403) {
        c.send(1, method);
        ServerFrame f = c.expect_channel_close(1, code);
        ASSERT_TRUE(f.is<m::ChannelClose>());
        EXPECT_EQ(std::string(f.get<m::ChannelClose>().reply_text), text);
        EXPECT_TRUE(c.open_channel(1)) << c.describe_pending();
    }
    static std::string refused(std::string_view kind, std::string_view name) {
        return "ACCESS_REFUSED - access to " + std::string(kind) + " '" + std::string(name) +
               "' in vhost '/' refused for user 'alice'";
    }
};

TEST_F(AccessTest, QueueDeclareNeedsConfigureOnTheQueue) {
    add_alice();
    TestClient& c = alice();
    EXPECT_EQ(c.declare_queue(1, "alice.q"), "alice.q");
    m::QueueDeclare d;
    d.queue = "bob.q";
    expect_refused(c, d, refused("queue", "bob.q"));
    EXPECT_FALSE(queue("bob.q"));
    // Server-named queues are checked too (amq.gen-… does not match ^alice\.).
    d.queue = "";
    c.send(1, d);
    ServerFrame f = c.expect_channel_close(1, 403);
    ASSERT_TRUE(f.is<m::ChannelClose>());
    EXPECT_NE(std::string(f.get<m::ChannelClose>().reply_text).find("access to queue 'amq.gen-"), std::string::npos);
    EXPECT_TRUE(vhost().queues().size() == 1);
}

TEST_F(AccessTest, PassiveDeclareNeedsNothing) {
    add_alice();
    connect().declare_queue(1, "guests.q");
    TestClient& c = alice();
    QueueOpts passive;
    passive.passive = true;
    EXPECT_EQ(c.declare_queue(1, "guests.q", passive), "guests.q");
    m::ExchangeDeclare e;
    e.exchange = "amq.topic";
    e.passive = true;
    c.send(1, e);
    c.expect<m::ExchangeDeclareOk>(1);
}

TEST_F(AccessTest, DeadLetterExchangeNeedsWriteOnItAndReadOnTheQueue) {
    add_alice();
    TestClient& c = alice();
    m::QueueDeclare d;
    d.queue = "alice.dl";
    d.arguments.set("x-dead-letter-exchange", "amq.direct");
    expect_refused(c, d, refused("exchange", "amq.direct"));
    d.arguments = {};
    d.arguments.set("x-dead-letter-exchange", "alice.dlx");
    c.send(1, d);
    c.expect<m::QueueDeclareOk>(1);
}

TEST_F(AccessTest, BindNeedsWriteOnTheQueueAndReadOnTheExchange) {
    add_alice();
    TestClient& c = alice();
    c.declare_queue(1, "alice.q");
    EXPECT_TRUE(c.bind_queue(1, "alice.q", "amq.fanout", ""));
    m::QueueBind b;
    b.queue = "alice.q";
    b.exchange = "amq.direct";
    expect_refused(c, b, refused("exchange", "amq.direct"));
    connect().declare_queue(1, "guests.q");
    b.queue = "guests.q";
    b.exchange = "amq.fanout";
    expect_refused(c, b, refused("queue", "guests.q"));
    m::QueueUnbind u;
    u.queue = "alice.q";
    u.exchange = "amq.direct";
    expect_refused(c, u, refused("exchange", "amq.direct"));
}

TEST_F(AccessTest, ExchangeBindNeedsWriteOnDestinationAndReadOnSource) {
    add_alice();
    TestClient& c = alice();
    EXPECT_TRUE(c.declare_exchange(1, "alice.x", "fanout"));
    m::ExchangeBind b;
    b.destination = "alice.x";
    b.source = "amq.fanout";
    c.send(1, b);
    c.expect<m::ExchangeBindOk>(1);
    b.source = "amq.topic";
    expect_refused(c, b, refused("exchange", "amq.topic"));
    b.destination = "amq.fanout";
    b.source = "alice.x";
    expect_refused(c, b, refused("exchange", "amq.fanout"));
}

TEST_F(AccessTest, DeletesNeedConfigure) {
    add_alice();
    TestClient& g = connect();
    g.declare_queue(1, "guests.q");
    EXPECT_TRUE(g.declare_exchange(1, "guests.x", "direct"));
    TestClient& c = alice();
    m::QueueDelete qd;
    qd.queue = "guests.q";
    expect_refused(c, qd, refused("queue", "guests.q"));
    m::ExchangeDelete ed;
    ed.exchange = "guests.x";
    expect_refused(c, ed, refused("exchange", "guests.x"));
    m::ExchangeDeclare e;
    e.exchange = "guests.y";
    e.type = "direct";
    expect_refused(c, e, refused("exchange", "guests.y"));
    EXPECT_TRUE(queue("guests.q"));
    EXPECT_TRUE(vhost().find_exchange("guests.x"));
}

TEST_F(AccessTest, PublishNeedsWriteOnTheExchangeDefaultIsAmqDefault) {
    add_alice();
    TestClient& c = alice();
    c.declare_queue(1, "alice.q");
    c.publish(1, "", "alice.q", "hello");  // amq.default is writable
    ServerFrame got = c.get(1, "alice.q", true);
    ASSERT_TRUE(got.is<m::BasicGetOk>());
    EXPECT_EQ(got.body, "hello");
    c.publish(1, "amq.fanout", "", "nope");
    ServerFrame f = c.expect_channel_close(1, 403);
    ASSERT_TRUE(f.is<m::ChannelClose>());
    EXPECT_EQ(std::string(f.get<m::ChannelClose>().reply_text), refused("exchange", "amq.fanout"));
    EXPECT_EQ(f.get<m::ChannelClose>().failing_method_id, m::BasicPublish::method_id);
}

TEST_F(AccessTest, PermissionChangeReachesAChannelThatPublishedBefore) {
    add_alice();
    TestClient& c = alice();
    c.declare_queue(1, "alice.q");
    c.publish(1, "", "alice.q", "1");  // cached: alice may write amq.default
    ASSERT_FALSE(broker().access_control().set_permissions("alice", "/", {"^alice\\.", "^alice\\.", "^alice\\."}));
    c.publish(1, "", "alice.q", "2");
    ServerFrame f = c.expect_channel_close(1, 403);
    ASSERT_TRUE(f.is<m::ChannelClose>());
    EXPECT_EQ(std::string(f.get<m::ChannelClose>().reply_text), refused("exchange", "amq.default"));
    EXPECT_EQ(queue("alice.q")->ready_count(), 1u);
}

TEST_F(AccessTest, ConsumeGetAndPurgeNeedRead) {
    add_alice();
    TestClient& g = connect();
    g.declare_queue(1, "guests.q");
    TestClient& c = alice();
    m::BasicConsume bc;
    bc.queue = "guests.q";
    expect_refused(c, bc, refused("queue", "guests.q"));
    m::BasicGet get;
    get.queue = "guests.q";
    expect_refused(c, get, refused("queue", "guests.q"));
    m::QueuePurge p;
    p.queue = "guests.q";
    expect_refused(c, p, refused("queue", "guests.q"));
    // Direct reply-to is no queue: anyone may consume it.
    EXPECT_FALSE(c.consume(1, "amq.rabbitmq.reply-to", true).empty());
}

TEST_F(AccessTest, ARefusalLeavesOtherChannelsAndConnectionsWorking) {
    add_alice();
    TestClient& g = connect();
    g.declare_queue(1, "guests.q");
    TestClient& c = alice();
    ASSERT_TRUE(c.open_channel(2));
    m::BasicGet get;
    get.queue = "guests.q";
    c.send(1, get);
    c.expect_channel_close(1, 403);
    EXPECT_EQ(c.declare_queue(2, "alice.q2"), "alice.q2");
    g.publish(1, "", "guests.q", "x");
    EXPECT_TRUE(g.get(1, "guests.q", true).is<m::BasicGetOk>());
}

TEST_F(AccessTest, LoginChecksThePasswordHash) {
    add_alice();
    ClientOptions o;
    o.user = "alice";
    o.password = "PW";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    ServerFrame f = c.expect_connection_close(403);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text),
              "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker "
              "logfile.");
    o.password = "pw";
    o.loopback = false;  // only the default user is tied to loopback
    EXPECT_TRUE(client(o).handshake());
}

TEST_F(AccessTest, DeletingAUserClosesItsConnections) {
    add_alice();
    TestClient& c = alice();
    TestClient& g = connect();
    EXPECT_TRUE(broker().delete_user("alice"));
    ServerFrame f = c.expect_connection_close(320);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text), "CONNECTION_FORCED - user 'alice' is deleted");
    EXPECT_EQ(g.pending(), 0u) << g.describe_pending();
    EXPECT_EQ(g.declare_queue(1, "still.here"), "still.here");
    EXPECT_FALSE(broker().access_control().permissions("alice", "/"));
    EXPECT_FALSE(broker().delete_user("alice"));
}

TEST_F(AccessTest, DefaultUserFromAfarUnlessConfigured) {
    ClientOptions o;
    o.loopback = false;
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    ServerFrame f = c.expect_connection_close(403);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text),
              "ACCESS_REFUSED - user 'guest' can only connect via localhost");
}

TEST_F(AccessTest, DefaultUserFromAfarWhenLoopbackOnlyIsOff) {
    config.default_user_loopback_only = false;
    ClientOptions o;
    o.loopback = false;
    EXPECT_TRUE(client(o).handshake());
}

TEST_F(AccessTest, ConnectionOpenNeedsAVhostWithPermissions) {
    add_alice();
    broker().put_vhost("other", "", {});
    ClientOptions o;
    o.user = "alice";
    o.password = "pw";
    o.vhost = "other";
    TestClient& c = client(o);
    EXPECT_FALSE(c.handshake());
    ServerFrame f = c.expect_connection_close(530);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text),
              "NOT_ALLOWED - access to vhost 'other' refused for user 'alice'");
    o.vhost = "nowhere";
    TestClient& d = client(o);
    EXPECT_FALSE(d.handshake());
    f = d.expect_connection_close(530);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text), "NOT_ALLOWED - vhost nowhere not found");
}

TEST_F(AccessTest, MaxConnectionsRefusesConnectionOpen) {
    broker::VHostLimits l;
    l.max_connections = 1;
    ASSERT_TRUE(broker().set_vhost_limits("/", l));
    connect();
    TestClient& c = client();
    EXPECT_FALSE(c.handshake());
    ServerFrame f = c.expect_connection_close(530);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text),
              "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached");
}

TEST_F(AccessTest, MaxQueuesRefusesANewQueueOnly) {
    broker::VHostLimits l;
    l.max_queues = 2;
    ASSERT_TRUE(broker().set_vhost_limits("/", l));
    TestClient& c = connect();
    c.declare_queue(1, "a");
    c.declare_queue(1, "b");
    EXPECT_EQ(c.declare_queue(1, "a"), "a");  // re-declaring is fine
    m::QueueDeclare d;
    d.queue = "c";
    c.send(1, d);
    ServerFrame f = c.expect_channel_close(1, 406);
    ASSERT_TRUE(f.is<m::ChannelClose>());
    EXPECT_EQ(std::string(f.get<m::ChannelClose>().reply_text),
              "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (2) is reached");
    l.max_queues = -1;
    broker().set_vhost_limits("/", l);
    ASSERT_TRUE(c.open_channel(1));
    EXPECT_EQ(c.declare_queue(1, "c"), "c");
}

TEST_F(AccessTest, VhostsKeepTheirOwnQueuesAndDeletingOneClosesItsConnections) {
    broker().put_vhost("v2", "second", {});
    ASSERT_FALSE(broker().access_control().set_permissions("guest", "v2", {".*", ".*", ".*"}));
    ClientOptions o;
    o.vhost = "v2";
    TestClient& a = connect();
    TestClient& b = connect(o);
    a.declare_queue(1, "same");
    b.declare_queue(1, "same");
    a.publish(1, "", "same", "in /");
    EXPECT_EQ(vhost().find_queue("same")->ready_count(), 1u);
    EXPECT_EQ(broker().find_vhost("v2")->find_queue("same")->ready_count(), 0u);
    ServerFrame got = b.get(1, "same", true);
    EXPECT_TRUE(got.is<m::BasicGetEmpty>());

    EXPECT_TRUE(broker().delete_vhost("v2"));
    ServerFrame f = b.expect_connection_close(320);
    ASSERT_TRUE(f.is<m::ConnectionClose>());
    EXPECT_EQ(std::string(f.get<m::ConnectionClose>().reply_text), "CONNECTION_FORCED - vhost 'v2' is deleted");
    EXPECT_FALSE(broker().find_vhost("v2"));
    EXPECT_FALSE(broker().access_control().permissions("guest", "v2"));
    EXPECT_EQ(vhost().find_queue("same")->ready_count(), 1u);  // "/" untouched
    a.publish(1, "", "same", "still");
    EXPECT_EQ(vhost().find_queue("same")->ready_count(), 2u);
}

// --- the records across a restart -------------------------------------------------

class QueueExecutor final : public broker::Executor {
public:
    void post(std::function<void()> fn) override { q_.push_back(std::move(fn)); }
    void run_all() {
        while (!q_.empty()) {
            auto fn = std::move(q_.front());
            q_.pop_front();
            fn();
        }
    }

private:
    std::deque<std::function<void()>> q_;
};

class AccessRecoveryTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("sluice-access-" + std::to_string(getpid()) + "-" +
                                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    // A broker over the store in dir_ (recovered), run by `fn`, then stopped.
    void with_broker(const broker::BrokerConfig& config, const std::function<void(broker::Broker&)>& fn) {
        storage::StoreOptions so;
        so.path = dir_.string();
        std::string error;
        auto store = storage::Store::open(so, error);
        ASSERT_TRUE(store) << error;
        QueueExecutor executor;
        broker::Broker b(config);
        b.attach_storage(store.get(), &executor);
        b.recover();
        fn(b);
        executor.run_all();
        b.durability().shutdown();
    }

    std::filesystem::path dir_;
};

TEST_F(AccessRecoveryTest, UsersVhostsPermissionsAndLimitsSurviveARestart) {
    broker::BrokerConfig config;
    with_broker(config, [](broker::Broker& b) {
        ASSERT_TRUE(b.access_control().find_user("guest"));  // first start: the defaults
        broker::User u;
        u.name = "alice";
        u.password_hash = broker::hash_password("pw");
        u.tags = {"monitoring"};
        b.access_control().put_user(u);
        b.put_vhost("v2", "second", {"prod"});
        ASSERT_FALSE(b.access_control().set_permissions("alice", "v2", {"^a", "^b", "^c"}));
        broker::VHostLimits l;
        l.max_queues = 7;
        b.set_vhost_limits("v2", l);
        broker::QueueOptions qo;
        qo.durable = true;
        bool created = false;
        b.find_vhost("v2")->declare_queue("q", qo, 0, created);
        b.find_vhost("/")->declare_queue("q", qo, 0, created);
        EXPECT_TRUE(b.access_control().delete_user("guest"));
    });
    config.default_password = "changed";  // a later start's flags do not overwrite the records
    with_broker(config, [](broker::Broker& b) {
        EXPECT_FALSE(b.access_control().find_user("guest"));
        const broker::User* alice = b.access_control().find_user("alice");
        ASSERT_TRUE(alice);
        EXPECT_EQ(alice->tags, std::vector<std::string>{"monitoring"});
        EXPECT_TRUE(b.authenticate("alice", "pw", false));
        ASSERT_TRUE(b.find_vhost("v2"));
        EXPECT_EQ(b.vhost_settings("v2")->description, "second");
        EXPECT_EQ(b.vhost_settings("v2")->tags, std::vector<std::string>{"prod"});
        EXPECT_EQ(b.vhost_settings("v2")->limits.max_queues, 7);
        EXPECT_EQ(b.vhost_settings("v2")->limits.max_connections, -1);
        auto p = b.access_control().permissions("alice", "v2");
        ASSERT_TRUE(p);
        EXPECT_EQ(p->patterns().write, "^b");
        EXPECT_TRUE(p->allows(Permission::read, "cq"));
        EXPECT_TRUE(b.find_vhost("v2")->find_queue("q"));
        EXPECT_TRUE(b.find_vhost("/")->find_queue("q"));
        EXPECT_NE(b.find_vhost("v2")->find_queue("q")->id(), b.find_vhost("/")->find_queue("q")->id());
        EXPECT_TRUE(b.delete_vhost("v2"));
    });
    with_broker(config, [](broker::Broker& b) {
        EXPECT_FALSE(b.find_vhost("v2"));
        EXPECT_FALSE(b.access_control().permissions("alice", "v2"));
        EXPECT_TRUE(b.find_vhost("/")->find_queue("q"));
        EXPECT_EQ(b.recovery_stats().queues, 1u);  // v2's queue went with it
    });
}

}  // namespace
}  // namespace sluice::test
