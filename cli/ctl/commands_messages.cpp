// publish and get: POST /api/exchanges/{vhost}/{exchange}/publish and
// POST /api/queues/{vhost}/{queue}/get. For trying things out and for
// looking at messages, not for moving many of them (that is AMQP's job).
#include <boost/json/array.hpp>
#include <charconv>
#include <istream>
#include <iterator>
#include <ostream>

#include "cli/ctl/command.hpp"
#include "cli/ctl/table.hpp"

namespace sluice::ctl {

namespace json = boost::json;

namespace {

const Option kExchange{"exchange", OptionKind::value, "EXCHANGE",
                       "publish to this exchange (default: the default exchange)"};
const Option kRoutingKey{"routing-key", OptionKind::value, "KEY", "the message's routing key (default empty)"};
const Option kBody{"body", OptionKind::value, "TEXT", "the message body (else the BODY operand, else stdin)"};
const Option kProperties{"properties", OptionKind::value, "JSON",
                         "basic properties as a JSON object: {\"content_type\": \"text/plain\", \"priority\": 3}"};
const Option kPersistent{"persistent", OptionKind::flag, "", "delivery_mode 2: kept on disk in a durable queue"};
const Option kContentType{"content-type", OptionKind::value, "TYPE", "the content_type property"};
const Option kHeader{"header", OptionKind::repeated, "KEY=VALUE", "a header (string value); may be given again"};
const Option kMandatory{"mandatory", OptionKind::flag, "", "fail (exit 1) if no queue got the message"};
const Option kCount{"count", OptionKind::value, "N", "take up to N messages (default 1)"};
const Option kAckmode{"ackmode", OptionKind::value, "MODE",
                      "requeue (default: leave them queued), ack (remove them), reject (drop them),\n"
                      "reject-requeue, or RabbitMQ's names (ack_requeue_true, ...)"};
const Option kBodyOnly{"body-only", OptionKind::flag, "", "print only the bodies, each followed by a newline"};

constexpr const char* kGetColumns = "exchange,routing_key,redelivered,message_count,payload_bytes,payload";

bool valid_utf8(std::string_view s) {
    static constexpr uint32_t kSmallest[] = {0, 0x80, 0x800, 0x10000};  // no overlong forms
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        }
        if ((c & 0xE0) == 0xC0) extra = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) extra = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) extra = 3, cp = c & 0x07;
        else return false;
        if (i + extra >= s.size()) return false;
        for (size_t k = 1; k <= extra; ++k) {
            unsigned char d = s[i + k];
            if ((d & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < kSmallest[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += extra + 1;
    }
    return true;
}

std::string base64_encode(std::string_view in) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : in) {
        acc = (acc << 8) | c;
        bits += 8;
        while (bits >= 6) out.push_back(kAlphabet[(acc >> (bits -= 6)) & 63]);
    }
    if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
    while (out.size() % 4) out.push_back('=');
    return out;
}

std::string base64_decode(std::string_view in) {
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : in) {
        int v = ch >= 'A' && ch <= 'Z' ? ch - 'A'
              : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
              : ch >= '0' && ch <= '9' ? ch - '0' + 52
              : ch == '+' ? 62 : ch == '/' ? 63 : -1;
        if (v < 0) continue;  // '=' padding
        acc = (acc << 6) | uint32_t(v);
        bits += 6;
        if (bits >= 8) out.push_back(char((acc >> (bits -= 8)) & 0xFF));
    }
    return out;
}

std::string message_body(Context& c) {
    auto body = c.args.value("body");
    if (body && !c.operands.empty()) throw UsageError("give the body either as --body or as the BODY operand");
    if (body) return *body;
    if (!c.operands.empty() && c.operands[0] != "-") return c.operands[0];
    return std::string(std::istreambuf_iterator<char>(c.in), std::istreambuf_iterator<char>());
}

void publish(Context& c) {
    std::string exchange = c.args.value("exchange").value_or("");
    std::string key = c.args.value("routing-key").value_or("");
    json::object props = json_object_option(c.args, "properties");
    if (c.args.flag("persistent")) props["delivery_mode"] = 2;
    if (auto t = c.args.value("content-type")) props["content_type"] = *t;
    for (const std::string& h : c.args.values("header")) {
        size_t eq = h.find('=');
        if (eq == std::string::npos || eq == 0) throw UsageError("--header takes KEY=VALUE, not '" + h + "'");
        json::value& headers = props["headers"];
        if (!headers.is_object()) headers = json::object();
        headers.get_object()[h.substr(0, eq)] = h.substr(eq + 1);
    }
    std::string body = message_body(c);
    json::object o;
    o["routing_key"] = key;
    o["properties"] = std::move(props);
    if (valid_utf8(body)) {
        o["payload"] = body;
        o["payload_encoding"] = "string";
    } else {
        o["payload"] = base64_encode(body);
        o["payload_encoding"] = "base64";
    }
    json::value v = std::move(o);
    std::string path =
        api_path({"exchanges", c.settings.vhost, exchange.empty() ? "amq.default" : exchange, "publish"});
    json::value answer = ApiClient::parse(c.api.send("POST", path, &v));
    const json::value* routed = answer.is_object() ? answer.get_object().if_contains("routed") : nullptr;
    if (!routed || !routed->is_bool()) throw ApiError(200, "the server's answer has no 'routed'");
    std::string size = std::to_string(body.size()) + (body.size() == 1 ? " byte" : " bytes");
    if (c.args.flag("json")) print_json(c.out, answer);
    else if (routed->get_bool()) c.out << "published " << size << ", routed\n";
    else c.out << "published " << size << ", NOT routed: no queue is bound for routing key '" << key << "'\n";
    if (!routed->get_bool() && c.args.flag("mandatory"))
        throw ApiError(200, "the message was not routed to any queue (--mandatory)");
}

std::string ackmode(const Context& c) {
    std::string mode = c.args.value("ackmode").value_or("requeue");
    if (mode == "requeue") return "ack_requeue_true";
    if (mode == "ack") return "ack_requeue_false";
    if (mode == "reject") return "reject_requeue_false";
    if (mode == "reject-requeue") return "reject_requeue_true";
    if (mode == "ack_requeue_true" || mode == "ack_requeue_false" || mode == "reject_requeue_true" ||
        mode == "reject_requeue_false")
        return mode;
    throw UsageError("--ackmode is requeue, ack, reject or reject-requeue, not '" + mode + "'");
}

int64_t count(const Context& c) {
    std::string text = c.args.value("count").value_or("1");
    int64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end != text.data() + text.size() || n < 1)
        throw UsageError("--count takes a whole number from 1, not '" + text + "'");
    return n;
}

void get(Context& c) {
    const std::string& queue = c.operands[0];
    json::object o;
    o["count"] = count(c);
    o["ackmode"] = ackmode(c);
    o["encoding"] = "auto";
    json::value v = std::move(o);
    json::value answer = ApiClient::parse(c.api.send("POST", api_path({"queues", c.settings.vhost, queue, "get"}), &v));
    if (!answer.is_array()) throw ApiError(200, "the server's answer to get is not a JSON array");
    if (c.args.flag("json")) return print_json(c.out, answer);
    if (c.args.flag("body-only")) {
        for (const json::value& m : answer.get_array()) {
            const json::value* payload = m.is_object() ? m.get_object().if_contains("payload") : nullptr;
            const json::value* encoding = m.is_object() ? m.get_object().if_contains("payload_encoding") : nullptr;
            if (!payload || !payload->is_string()) continue;
            std::string_view text = payload->get_string();
            bool b64 = encoding && encoding->is_string() && encoding->get_string() == "base64";
            c.out << (b64 ? base64_decode(text) : std::string(text)) << '\n';
        }
        return;
    }
    std::vector<std::string> columns = split_columns(c.args.value("columns").value_or(std::string(kGetColumns)));
    write_table(c.out, columns, answer.get_array(), !c.args.flag("no-headers"));
}

}  // namespace

std::vector<Command> message_commands() {
    return {
        {"publish", "[BODY]", "publish one message to an exchange in --vhost",
         "The body is --body TEXT, else the BODY operand, else stdin (also for BODY '-');\n"
         "a body that is not UTF-8 is sent base64-encoded.\n"
         "Example: echo hello | sluicectl publish --routing-key orders --persistent",
         {kExchange, kRoutingKey, kBody, kProperties, kPersistent, kContentType, kHeader, kMandatory, kJsonOption},
         0, 1, publish},
        {"get", "QUEUE", "fetch messages from a queue in --vhost (by default they stay queued)",
         "Default columns: exchange,routing_key,redelivered,message_count,payload_bytes,payload.\n"
         "Example: sluicectl get orders --count 10 --ackmode ack",
         {kCount, kAckmode, kJsonOption, kColumnsOption, kNoHeadersOption, kBodyOnly}, 1, 1, get},
    };
}

}  // namespace sluice::ctl
