// libFuzzer target: arbitrary bytes into whole broker::Sessions.
//
// Two connections (A and B) share one Broker, each after a valid handshake
// prefix (protocol header, start-ok, tune-ok, open, channel.open 1), so the
// fuzzer starts inside channel logic and can make the two interact (one
// publishes, the other consumes; exclusive queues; direct reply-to; requeue
// when one goes away).
//
// Input layout:  [layout octet] [stream for A] "@@SWAP@@" [stream for B] "@@SWAP@@" [A] …
// The separator switches the connection the following bytes go to. Each
// stream is fed in chunks the way net/ does (on_bytes returns what it used,
// the caller keeps the rest). The layout octet picks:
//   bits 0-2  chunk size: whole segment, 1, 2, 7, 64, 512, 4096, 65536
//   bit 3     back-pressure: small output watermark, output drained only every
//             4th chunk, then on_writable()
//   bit 4     on_heartbeat_due() after every chunk
//   bit 5     at the end, close B's transport before A's (else A first)
//   bit 6     tune-ok frame_max 4096 (else 131072)
//   bit 7     close A's transport half-way through the input
//
// A custom mutator helps libFuzzer's byte-level mutations: a third of the
// time it works on whole frames instead, inserting a well-formed client method
// (ack/nack/reject of small delivery tags, get, consume, cancel, declare,
// delete, bind, publish with content, qos, confirm, tx, channel open/close,
// …, on channel 1 or 2, with names from a small shared set) at a frame
// boundary, or dropping or duplicating a frame, or switching connection.
// Byte mutations alone took minutes without ever forming, say, the one ack
// frame that settles a delivery into a deleted queue.
//
// Besides "no crash, no UB, no leak, no hang", every byte a session writes
// must be a well-formed frame sequence whose method frames decode, and (on a
// connection past tune-ok) no frame may exceed the negotiated frame_max; set
// FUZZ_SESSION_ALLOW_OVERSIZE=1 to waive the last check (a known bug: the
// direct reply-to rewrite can grow a max-size content header past it).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker.hpp"
#include "broker/session.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"

namespace amqp = sluice::amqp;
namespace broker = sluice::broker;
namespace m = sluice::amqp::method;

namespace {

constexpr std::string_view kSwap = "@@SWAP@@";

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_session: property violated: %s\n", what);
    std::abort();
}

// No `override`: the host interface grows (resume_reading) and this must
// build on either side of such a change.
class FakeHost : public broker::SessionHost {
public:
    void request_flush() { ++flushes; }
    void close_transport() { closed = true; }
    void start_heartbeat(uint16_t seconds) { heartbeat = seconds; }
    void resume_reading() {}
    int flushes = 0;
    bool closed = false;
    uint16_t heartbeat = 0;
};

std::string handshake(uint32_t frame_max) {
    std::string out(amqp::kProtocolHeader);
    m::ConnectionStartOk ok;
    amqp::FieldTable caps;
    for (const char* c : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                          "connection.blocked", "authentication_failure_close"})
        caps.set(c, true);
    ok.client_properties.set("product", "fuzz_session");
    ok.client_properties.set("capabilities", std::move(caps));
    ok.mechanism = "PLAIN";
    static const std::string response("\0guest\0guest", 12);
    ok.response = response;
    ok.locale = "en_US";
    amqp::write_method(out, 0, ok);
    m::ConnectionTuneOk tune;
    tune.channel_max = 2047;
    tune.frame_max = frame_max;
    tune.heartbeat = 0;
    amqp::write_method(out, 0, tune);
    m::ConnectionOpen open;
    open.virtual_host = "/";
    amqp::write_method(out, 0, open);
    amqp::write_method(out, 1, m::ChannelOpen{});
    return out;
}

struct Connection {
    FakeHost host;
    std::unique_ptr<broker::Session> session;
    std::string input;  // unconsumed bytes
    uint32_t frame_max = 0;
    bool transport_closed = false;
    bool check_oversize = true;

    Connection(broker::Broker& b, uint32_t fm, bool strict) : frame_max(fm), check_oversize(strict) {
        broker::ConnectionInfo info;
        info.peer = "127.0.0.1:1";
        info.loopback = true;
        session = std::make_unique<broker::Session>(b, host, info);
        feed(handshake(fm));
        drain();
        if (session->closed() || host.closed) fail("handshake prefix was refused");
    }

    void feed(std::string_view bytes) {
        if (transport_closed) return;
        input.append(bytes);
        const size_t used = session->on_bytes(input);
        if (used > input.size()) fail("on_bytes consumed more than it was given");
        input.erase(0, used);
        // A session that stopped reading must not be handed input forever.
        if (session->closed()) input.clear();
    }

    // Takes the output, as net/ does when it writes, and checks it.
    void drain() {
        std::string out;
        out.swap(session->output());
        std::string_view v = out;
        while (!v.empty()) {
            if (v.substr(0, amqp::kProtocolHeader.size()) == amqp::kProtocolHeader) {
                v.remove_prefix(amqp::kProtocolHeader.size());
                continue;
            }
            amqp::FrameParse p = amqp::parse_frame(v, 0);
            if (p.status != amqp::FrameStatus::ok) fail("session wrote bytes that are not a whole frame");
            // The limit binds only once the client has said what it accepts.
            if (check_oversize && p.consumed > frame_max) fail("session wrote a frame above frame_max");
            if (p.frame.type == amqp::kFrameMethod) {
                amqp::Method method;
                if (amqp::decode_method(p.frame.payload, method) != amqp::DecodeError::none)
                    fail("session wrote a method frame that does not decode");
            }
            v.remove_prefix(p.consumed);
        }
    }

    void close_transport() {
        if (transport_closed) return;
        transport_closed = true;
        session->on_transport_closed();
        drain();
    }
};


// ---- frame-aware mutation --------------------------------------------------

// Offsets (into the whole input) where a frame or a segment starts, and the
// end of the well-formed prefix of each segment.
std::vector<size_t> frame_boundaries(std::string_view input) {
    std::vector<size_t> out;
    size_t pos = 1;  // after the layout octet
    out.push_back(pos);
    while (pos < input.size()) {
        std::string_view rest = input.substr(pos);
        if (rest.substr(0, kSwap.size()) == kSwap) {
            pos += kSwap.size();
            out.push_back(pos);
            continue;
        }
        amqp::FrameParse p = amqp::parse_frame(rest, 0);
        if (p.status != amqp::FrameStatus::ok) {
            size_t next = input.find(kSwap, pos);  // skip junk up to the next segment
            if (next == std::string_view::npos) break;
            pos = next;
            continue;
        }
        pos += p.consumed;
        out.push_back(pos);
    }
    return out;
}

std::string random_frame(std::mt19937& rng) {
    static const char* const kQueues[] = {"q", "q2", "", "amq.rabbitmq.reply-to", "doomed"};
    static const char* const kExchanges[] = {"", "amq.direct", "amq.topic", "amq.fanout", "amq.headers", "x"};
    static const char* const kTags[] = {"c1", "c2", ""};
    auto pick = [&](auto& arr) { return std::string_view(arr[rng() % (sizeof(arr) / sizeof(arr[0]))]); };
    auto coin = [&] { return rng() % 2 == 0; };
    const uint16_t ch = rng() % 4 == 0 ? 2 : 1;
    const uint64_t tag = rng() % 5;
    std::string out;
    // Settlements are listed twice: they are where most per-delivery state lives.
    unsigned pick_method = rng() % 25;
    if (pick_method >= 22) pick_method -= 22;
    switch (pick_method) {
        case 0: { m::BasicAck a; a.delivery_tag = tag; a.multiple = coin(); amqp::write_method(out, ch, a); break; }
        case 1: { m::BasicNack n; n.delivery_tag = tag; n.multiple = coin(); n.requeue = coin(); amqp::write_method(out, ch, n); break; }
        case 2: { m::BasicReject r; r.delivery_tag = tag; r.requeue = coin(); amqp::write_method(out, ch, r); break; }
        case 3: { m::BasicGet g; g.queue = pick(kQueues); g.no_ack = coin(); amqp::write_method(out, ch, g); break; }
        case 4: {
            m::BasicConsume c; c.queue = pick(kQueues); c.consumer_tag = pick(kTags);
            c.no_ack = coin(); c.exclusive = rng() % 4 == 0;
            amqp::write_method(out, ch, c); break;
        }
        case 5: { m::BasicCancel c; c.consumer_tag = pick(kTags); amqp::write_method(out, ch, c); break; }
        case 6: {
            m::QueueDeclare d; d.queue = pick(kQueues); d.durable = rng() % 4 == 0; d.exclusive = rng() % 3 == 0;
            d.auto_delete = rng() % 3 == 0; d.passive = rng() % 5 == 0;
            amqp::write_method(out, ch, d); break;
        }
        case 7: { m::QueueDelete d; d.queue = pick(kQueues); d.if_unused = rng() % 4 == 0; amqp::write_method(out, ch, d); break; }
        case 8: { m::QueuePurge p; p.queue = pick(kQueues); amqp::write_method(out, ch, p); break; }
        case 9: {
            m::QueueBind b; b.queue = pick(kQueues); b.exchange = pick(kExchanges); b.routing_key = pick(kQueues);
            amqp::write_method(out, ch, b); break;
        }
        case 10: {
            static const char* const kTypes[] = {"direct", "fanout", "topic", "headers"};
            m::ExchangeDeclare d; d.exchange = "x"; d.type = pick(kTypes); d.auto_delete = coin();
            amqp::write_method(out, ch, d); break;
        }
        case 11: { m::ExchangeDelete d; d.exchange = "x"; amqp::write_method(out, ch, d); break; }
        case 12: {
            m::ExchangeBind b; b.destination = "x"; b.source = pick(kExchanges); b.routing_key = "#";
            amqp::write_method(out, ch, b); break;
        }
        case 13:
        case 14: {
            m::BasicPublish p; p.exchange = pick(kExchanges); p.routing_key = pick(kQueues); p.mandatory = coin();
            amqp::write_method(out, ch, p);
            amqp::BasicProperties props;
            if (rng() % 3 == 0) props.reply_to = "amq.rabbitmq.reply-to";
            if (rng() % 3 == 0) props.delivery_mode = 2;
            std::string raw;
            amqp::encode_properties(raw, props);
            const std::string body(rng() % 3, 'b');
            size_t h = amqp::begin_frame(out, amqp::kFrameHeader, ch);
            amqp::encode_content_header(out, m::BasicPublish::class_id, body.size(), raw);
            amqp::end_frame(out, h);
            if (!body.empty()) amqp::write_frame(out, amqp::kFrameBody, ch, body);
            break;
        }
        case 15: { m::BasicQos q; q.prefetch_count = rng() % 3; q.global = coin(); amqp::write_method(out, ch, q); break; }
        case 16: amqp::write_method(out, ch, m::ConfirmSelect{}); break;
        case 17: {
            switch (rng() % 3) {
                case 0: amqp::write_method(out, ch, m::TxSelect{}); break;
                case 1: amqp::write_method(out, ch, m::TxCommit{}); break;
                default: amqp::write_method(out, ch, m::TxRollback{}); break;
            }
            break;
        }
        case 18: { m::BasicRecover r; r.requeue = true; amqp::write_method(out, ch, r); break; }
        case 19: amqp::write_method(out, ch, m::ChannelOpen{}); break;
        case 20: {
            if (coin()) { m::ChannelClose c; c.reply_code = 200; amqp::write_method(out, ch, c); }
            else amqp::write_method(out, ch, m::ChannelCloseOk{});
            break;
        }
        default: out = std::string(kSwap); break;
    }
    return out;
}

}  // namespace

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
    std::mt19937 rng(seed);
    if (size < 1 || rng() % 3 != 0) return LLVMFuzzerMutate(data, size, max_size);
    std::string input(reinterpret_cast<const char*>(data), size);
    std::vector<size_t> cuts = frame_boundaries(input);
    const size_t at = cuts[rng() % cuts.size()];
    switch (rng() % 4) {
        case 0:  // drop the frame that starts here
        case 1: {  // or duplicate it
            auto it = std::upper_bound(cuts.begin(), cuts.end(), at);
            if (it == cuts.end()) break;
            std::string frame = input.substr(at, *it - at);
            if (rng() % 2 == 0) input.erase(at, frame.size());
            else input.insert(at, frame);
            break;
        }
        default:
            input.insert(at, random_frame(rng));
            break;
    }
    if (input.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
    std::memcpy(data, input.data(), input.size());
    return input.size();
}

namespace {
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    static const bool strict = [] {
        const char* e = std::getenv("FUZZ_SESSION_ALLOW_OVERSIZE");
        return !(e && *e == '1');
    }();
    const uint8_t layout = data[0];
    std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);

    static constexpr size_t kChunks[] = {0, 1, 2, 7, 64, 512, 4096, 65536};
    const size_t chunk = kChunks[layout & 7];
    const bool backpressure = layout & 0x08;
    const bool heartbeats = layout & 0x10;
    const bool close_b_first = layout & 0x20;
    const uint32_t frame_max = (layout & 0x40) ? 4096 : 131072;
    const bool close_a_midway = layout & 0x80;

    broker::BrokerConfig config;
    // A content header reserves its whole body size up front; under ASan that
    // touches 1/8 of it in shadow memory, so the default 128 MiB limit would
    // turn every large header into an RSS "leak" report. 1 MiB keeps the
    // too-large path reachable.
    config.max_message_size = 1u << 20;
    if (backpressure) config.output_high_watermark = 8 * 1024;
    broker::Broker broker(config);
    {
        // Heap-allocated: a Session holds a reference to its host.
        std::unique_ptr<Connection> conns[2] = {std::make_unique<Connection>(broker, frame_max, strict),
                                                std::make_unique<Connection>(broker, frame_max, strict)};
        size_t target = 0;
        size_t step = 0;
        const size_t half = rest.size() / 2;
        size_t fed_total = 0;

        auto after_chunk = [&](Connection& c) {
            ++step;
            if (heartbeats) c.session->on_heartbeat_due();
            if (!backpressure || step % 4 == 0) {
                for (auto& x : conns) {
                    x->drain();
                    if (!x->transport_closed) x->session->on_writable();
                }
            }
            if (close_a_midway && fed_total >= half) conns[0]->close_transport();
        };

        while (!rest.empty()) {
            size_t sep = rest.find(kSwap);
            std::string_view segment = rest.substr(0, sep);
            Connection& c = *conns[target];
            if (chunk == 0) {
                c.feed(segment);
                fed_total += segment.size();
                after_chunk(c);
            } else {
                for (size_t off = 0; off < segment.size(); off += chunk) {
                    std::string_view piece = segment.substr(off, chunk);
                    c.feed(piece);
                    fed_total += piece.size();
                    after_chunk(c);
                }
            }
            if (sep == std::string_view::npos) break;
            rest.remove_prefix(sep + kSwap.size());
            fed_total += kSwap.size();
            target ^= 1;
        }
        for (auto& x : conns) x->drain();
        if (close_b_first) {
            conns[1]->close_transport();
            conns[0]->close_transport();
        } else {
            conns[0]->close_transport();
            conns[1]->close_transport();
        }
        // Sessions are destroyed here, before the broker.
    }
    return 0;
}
