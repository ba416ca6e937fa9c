// Frame parser and writers.
#include <gtest/gtest.h>

#include <string>

#include "net/amqp/delivery.hpp"
#include "net/amqp/frame.hpp"
#include "net/amqp/methods.hpp"
#include "net/amqp/properties.hpp"
#include "net/amqp/wire.hpp"

namespace sluice::amqp {
namespace {

std::string frame(uint8_t type, uint16_t channel, std::string_view payload) {
    std::string out;
    write_frame(out, type, channel, payload);
    return out;
}

// A frame header announcing `size` bytes of payload, with nothing after it.
std::string header_only(uint8_t type, uint32_t size) {
    std::string out;
    put_u8(out, type);
    put_u16(out, 1);
    put_u32(out, size);
    return out;
}

TEST(Frame, WriteFrameLayout) {
    EXPECT_EQ(frame(kFrameBody, 0xBEEF, "abc"),
              std::string("\x03\xbe\xef\x00\x00\x00\x03" "abc" "\xce", 11));
    std::string hb;
    write_heartbeat(hb);
    EXPECT_EQ(hb, std::string("\x08\x00\x00\x00\x00\x00\x00\xce", 8));
}

TEST(Frame, BeginEndFrameMatchesWriteFrame) {
    std::string out = "already here";
    const size_t at = begin_frame(out, kFrameMethod, 7);
    EXPECT_EQ(at, 12u);
    out += "payload";
    end_frame(out, at);
    EXPECT_EQ(out, "already here" + frame(kFrameMethod, 7, "payload"));
    // An empty payload too.
    std::string e;
    end_frame(e, begin_frame(e, kFrameHeartbeat, 0));
    EXPECT_EQ(e, frame(kFrameHeartbeat, 0, ""));
}

TEST(Frame, ParsesEveryValidType) {
    for (uint8_t type : {kFrameMethod, kFrameHeader, kFrameBody, kFrameHeartbeat}) {
        const std::string f = frame(type, 0xFFFF, "xy");
        const FrameParse p = parse_frame(f, 0);
        ASSERT_EQ(p.status, FrameStatus::ok) << int(type);
        EXPECT_EQ(p.frame.type, type);
        EXPECT_EQ(p.frame.channel, 0xFFFF);
        EXPECT_EQ(p.frame.payload, "xy");
        EXPECT_EQ(p.frame.payload.data(), f.data() + 7);  // points into the buffer
        EXPECT_EQ(p.consumed, f.size());
    }
}

TEST(Frame, Heartbeat) {
    std::string hb;
    write_heartbeat(hb);
    const FrameParse p = parse_frame(hb, kFrameMinSize);
    ASSERT_EQ(p.status, FrameStatus::ok);
    EXPECT_EQ(p.frame.type, kFrameHeartbeat);
    EXPECT_EQ(p.frame.channel, 0);
    EXPECT_TRUE(p.frame.payload.empty());
    EXPECT_EQ(p.consumed, 8u);
}

TEST(Frame, NeedMoreAtEveryPrefix) {
    const std::string f = frame(kFrameMethod, 1, std::string(300, 'p'));
    for (size_t n = 0; n < f.size(); ++n) {
        const FrameParse p = parse_frame(std::string_view(f).substr(0, n), 4096);
        EXPECT_EQ(p.status, FrameStatus::need_more) << "prefix " << n;
        EXPECT_EQ(p.consumed, 0u);
    }
    EXPECT_EQ(parse_frame(f, 4096).status, FrameStatus::ok);
}

TEST(Frame, TooLargeFromTheHeaderAlone) {
    // 7 header bytes are enough to refuse: nothing of the payload has arrived.
    EXPECT_EQ(parse_frame(header_only(kFrameBody, 131072), 131072).status, FrameStatus::too_large);
    EXPECT_EQ(parse_frame(header_only(kFrameBody, 0xFFFFFFFF), 131072).status, FrameStatus::too_large);
    EXPECT_EQ(parse_frame(header_only(kFrameBody, 0xFFFFFFFF), 0xFFFFFFFF).status, FrameStatus::too_large);
    // Fewer than 7 bytes: we cannot know yet.
    EXPECT_EQ(parse_frame(header_only(kFrameBody, 0xFFFFFFFF).substr(0, 6), 4096).status,
              FrameStatus::need_more);
}

TEST(Frame, MaxFrameSizeCountsHeaderAndEndOctet) {
    const uint32_t max = 4096;
    // size + 8 == max: allowed.
    const std::string fits = frame(kFrameBody, 1, std::string(max - 8, 'b'));
    EXPECT_EQ(parse_frame(fits, max).status, FrameStatus::ok);
    EXPECT_EQ(parse_frame(header_only(kFrameBody, max - 8), max).status, FrameStatus::need_more);
    // One byte more: refused.
    const std::string over = frame(kFrameBody, 1, std::string(max - 7, 'b'));
    EXPECT_EQ(parse_frame(over, max).status, FrameStatus::too_large);
    EXPECT_EQ(parse_frame(header_only(kFrameBody, max - 7), max).status, FrameStatus::too_large);
}

TEST(Frame, ZeroMaxMeansUnlimited) {
    EXPECT_EQ(parse_frame(header_only(kFrameBody, 0xFFFFFFFF), 0).status, FrameStatus::need_more);
    const std::string big = frame(kFrameBody, 1, std::string(1 << 20, 'b'));
    EXPECT_EQ(parse_frame(big, 0).status, FrameStatus::ok);
}

TEST(Frame, BadEnd) {
    std::string f = frame(kFrameMethod, 1, "abc");
    for (int end = 0; end < 256; ++end) {
        if (end == kFrameEnd) continue;
        f.back() = char(end);
        EXPECT_EQ(parse_frame(f, 0).status, FrameStatus::bad_end) << end;
    }
    // The end octet is checked where the size says it is, not at the buffer's end.
    std::string two = frame(kFrameMethod, 1, "abc") + "\xce";
    EXPECT_EQ(parse_frame(two, 0).status, FrameStatus::ok);
    two[10] = 'x';
    EXPECT_EQ(parse_frame(two, 0).status, FrameStatus::bad_end);
}

TEST(Frame, BadType) {
    for (int type = 0; type < 256; ++type) {
        if (type == kFrameMethod || type == kFrameHeader || type == kFrameBody || type == kFrameHeartbeat) {
            continue;
        }
        const std::string f = frame(uint8_t(type), 0, "");
        EXPECT_EQ(parse_frame(f, 0).status, FrameStatus::bad_type) << type;
        // Known from the header alone.
        EXPECT_EQ(parse_frame(header_only(uint8_t(type), 100), 0).status, FrameStatus::bad_type) << type;
    }
    // The protocol header is not a frame: 'A' is not a frame type.
    EXPECT_EQ(parse_frame(kProtocolHeader, 0).status, FrameStatus::bad_type);
}

TEST(Frame, MultipleFramesInOneBuffer) {
    std::string buf;
    write_frame(buf, kFrameMethod, 1, "method");
    write_frame(buf, kFrameHeader, 1, "header");
    write_frame(buf, kFrameBody, 1, "");
    write_heartbeat(buf);
    write_frame(buf, kFrameBody, 2, std::string(5000, 'z'));
    buf += std::string("\x01\x00", 2);  // the start of a sixth frame

    struct Want {
        uint8_t type;
        uint16_t channel;
        size_t size;
    };
    const Want want[] = {{kFrameMethod, 1, 6}, {kFrameHeader, 1, 6}, {kFrameBody, 1, 0},
                         {kFrameHeartbeat, 0, 0}, {kFrameBody, 2, 5000}};
    std::string_view in = buf;
    for (const Want& w : want) {
        const FrameParse p = parse_frame(in, 131072);
        ASSERT_EQ(p.status, FrameStatus::ok);
        EXPECT_EQ(p.frame.type, w.type);
        EXPECT_EQ(p.frame.channel, w.channel);
        EXPECT_EQ(p.frame.payload.size(), w.size);
        in.remove_prefix(p.consumed);
    }
    EXPECT_EQ(in.size(), 2u);
    EXPECT_EQ(parse_frame(in, 131072).status, FrameStatus::need_more);
}

TEST(Frame, ArbitraryBytesNeverCrash) {
    uint64_t rng = 0xDEADBEEFCAFEF00Dull;
    auto next = [&rng] {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    };
    for (int round = 0; round < 50000; ++round) {
        std::string b(next() % 40, '\0');
        for (char& c : b) c = char(next());
        if (!b.empty() && next() % 2) b[0] = char(1 + next() % 3);  // mostly valid types
        if (b.size() >= 7 && next() % 2) b[3] = b[4] = b[5] = 0;       // small sizes
        const FrameParse p = parse_frame(b, uint32_t(next() % 64));
        if (p.status == FrameStatus::ok) {
            EXPECT_LE(p.consumed, b.size());
            EXPECT_EQ(p.consumed, p.frame.payload.size() + kFrameOverhead);
        }
    }
}

// write_deliver() and write_content() are the hot path's one-pass writers:
// their bytes must be those of the generic writers, for every shape of
// delivery.
TEST(Frame, WriteDeliverAndWriteContentMatchTheGenericWriters) {
    const std::string long_name(300, 'n');  // cut at 255, as the generated encoder does
    const std::string props = [] {
        std::string p;
        put_u16(p, 0x9000);  // content-type and delivery-mode
        put_shortstr(p, "text/plain");
        put_u8(p, 2);
        return p;
    }();
    struct Case {
        std::string tag, exchange, key, properties, body;
        uint64_t delivery_tag;
        bool redelivered;
        size_t chunk;
    };
    const std::vector<Case> cases = {
        {"ctag", "", "q", "", "", 1, false, 131064},
        {"ctag", "amq.direct", "rk", props, "hello", 0xFFFFFFFFFFFFull, true, 131064},
        {"", "x", "", props, std::string(100, 'b'), 7, false, 100},
        {"t", "x", "k", props, std::string(101, 'b'), 8, false, 100},
        {long_name, long_name, long_name, props, std::string(350, 'z'), 9, true, 100},
        {"t", "x", "k", "", std::string(5, 'q'), 10, false, 1},
    };
    for (const auto& c : cases) {
        method::BasicDeliver d;
        d.consumer_tag = c.tag;
        d.delivery_tag = c.delivery_tag;
        d.redelivered = c.redelivered;
        d.exchange = c.exchange;
        d.routing_key = c.key;
        std::string expected = "prefix", got = "prefix";
        write_method(expected, 3, d);
        const size_t h = begin_frame(expected, kFrameHeader, 3);
        encode_content_header(expected, method::BasicDeliver::class_id, c.body.size(), c.properties);
        end_frame(expected, h);
        for (std::string_view body = c.body; !body.empty();) {
            const size_t n = std::min(body.size(), c.chunk);
            write_frame(expected, kFrameBody, 3, body.substr(0, n));
            body.remove_prefix(n);
        }
        write_deliver(got, 3, d, c.properties, c.body.size(), c.body, c.chunk);
        EXPECT_EQ(got, expected) << "body " << c.body.size() << ", chunk " << c.chunk;
        // The content alone (basic.get-ok's and basic.return's): the same
        // bytes after the method frame.
        std::string method = "prefix", content = "prefix";
        write_method(method, 3, d);
        write_content(content, 3, method::BasicDeliver::class_id, c.properties, c.body.size(), c.body, c.chunk);
        EXPECT_EQ(content.substr(6), expected.substr(method.size())) << "content, body " << c.body.size();
    }
}

}  // namespace
}  // namespace sluice::amqp
