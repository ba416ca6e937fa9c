#include "broker/queue_arguments.hpp"

namespace sluice::broker {

namespace {

// RabbitMQ's names for field value types, as its error texts print them.
const char* type_name(const amqp::FieldValue& v) {
    switch (v.type_code()) {
        case 't': return "bool";
        case 'b': return "byte";
        case 'B': return "unsignedbyte";
        case 's': return "short";
        case 'u': return "unsignedshort";
        case 'I': return "signedint";
        case 'i': return "unsignedint";
        case 'l': return "long";
        case 'f': return "float";
        case 'd': return "double";
        case 'D': return "decimal";
        case 'S': return "longstr";
        case 'A': return "array";
        case 'T': return "timestamp";
        case 'F': return "table";
        case 'V': return "void";
        case 'x': return "binary";
        default: return "unknown";
    }
}

constexpr uint64_t kMaxTimerMs = 4294967295u;  // RabbitMQ's largest TTL / expiry

class Parser {
public:
    Parser(const amqp::FieldTable& args, std::string_view queue, std::string_view vhost)
        : args_(args), queue_(queue), vhost_(vhost) {}

    Status error;

    AmqpError invalid(std::string_view arg, const std::string& why) const {
        return amqp_error(reply::precondition_failed, "invalid arg '" + std::string(arg) + "' for queue '" +
                                                          std::string(queue_) + "' in vhost '" + std::string(vhost_) +
                                                          "': " + why);
    }

    // A non-negative integer (or positive, for x-expires) up to `max`.
    std::optional<uint64_t> integer(std::string_view arg, bool positive = false, uint64_t max = UINT64_MAX) {
        const amqp::FieldValue* v = args_.find(arg);
        if (!v || error) return std::nullopt;
        auto i = v->as_int();
        if (!i) return fail(arg, "\"expected integer, got " + std::string(type_name(*v)) + "\"");
        if (*i < 0) return fail(arg, "{value_negative," + std::to_string(*i) + "}");
        if (positive && *i == 0) return fail(arg, "{value_zero,0}");
        if (static_cast<uint64_t>(*i) > max)
            return fail(arg, "{value_too_large," + std::to_string(*i) + "," + std::to_string(max) + "}");
        return static_cast<uint64_t>(*i);
    }

    std::optional<std::string> string(std::string_view arg) {
        const amqp::FieldValue* v = args_.find(arg);
        if (!v || error) return std::nullopt;
        auto s = v->type_code() == 'S' ? v->as_string() : std::nullopt;
        if (!s) {
            // RabbitMQ words a string argument's type error differently.
            if (!error)
                error = amqp_error(reply::precondition_failed, "invalid type '" + std::string(type_name(*v)) +
                                                                   "' for arg '" + std::string(arg) + "' in queue '" +
                                                                   std::string(queue_) + "' in vhost '" +
                                                                   std::string(vhost_) + "'");
            return std::nullopt;
        }
        return std::string(*s);
    }

    std::optional<bool> boolean(std::string_view arg) {
        const amqp::FieldValue* v = args_.find(arg);
        if (!v || error) return std::nullopt;
        auto b = v->as_bool();
        if (!b) fail(arg, "{unacceptable_type," + std::string(type_name(*v)) + "}");
        return b;
    }

    std::nullopt_t fail(std::string_view arg, const std::string& why) {
        if (!error) error = invalid(arg, why);
        return std::nullopt;
    }

private:
    const amqp::FieldTable& args_;
    std::string_view queue_;
    std::string_view vhost_;
};

}  // namespace

const char* queue_type_name(QueueType t) {
    switch (t) {
        case QueueType::quorum: return "quorum";
        case QueueType::stream: return "stream";
        default: return "classic";
    }
}

std::optional<uint64_t> parse_stream_duration_ms(std::string_view text) {
    if (text.size() < 2) return std::nullopt;
    uint64_t n = 0;
    for (char c : text.substr(0, text.size() - 1)) {
        if (c < '0' || c > '9' || n > (UINT64_MAX / 10 - 9) / 1000) return std::nullopt;
        n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    constexpr uint64_t s = 1000, day = 86400 * s;
    uint64_t unit = 0;
    switch (text.back()) {
        case 'Y': unit = 365 * day; break;
        case 'M': unit = 30 * day; break;
        case 'D': unit = day; break;
        case 'h': unit = 3600 * s; break;
        case 'm': unit = 60 * s; break;
        case 's': unit = s; break;
        default: return std::nullopt;
    }
    if (n == 0 || n > UINT64_MAX / unit) return std::nullopt;
    return n * unit;
}

std::variant<QueueArguments, AmqpError> parse_queue_arguments(const amqp::FieldTable& args, std::string_view queue,
                                                              std::string_view vhost, QueueDeclareFlags flags) {
    QueueArguments a;
    Parser p(args, queue, vhost);
    a.message_ttl_ms = p.integer("x-message-ttl", false, kMaxTimerMs);
    a.expires_ms = p.integer("x-expires", true, kMaxTimerMs);
    a.dead_letter_exchange = p.string("x-dead-letter-exchange");
    a.dead_letter_routing_key = p.string("x-dead-letter-routing-key");
    if (a.dead_letter_routing_key && !a.dead_letter_exchange && !p.error)
        p.fail("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined");
    a.max_length = p.integer("x-max-length");
    a.max_length_bytes = p.integer("x-max-length-bytes");
    if (auto o = p.string("x-overflow")) {
        if (*o == "drop-head") a.overflow = Overflow::drop_head;
        else if (*o == "reject-publish") a.overflow = Overflow::reject_publish;
        else if (*o == "reject-publish-dlx") a.overflow = Overflow::reject_publish_dlx;
        else p.fail("x-overflow", "{invalid_overflow,<<\"" + *o + "\">>}");
    }
    if (auto prio = p.integer("x-max-priority")) {
        if (*prio > 255) p.fail("x-max-priority", "{max_value_exceeded," + std::to_string(*prio) + "}");
        else a.max_priority = static_cast<uint8_t>(*prio);
    }
    a.single_active_consumer = p.boolean("x-single-active-consumer").value_or(false);
    a.delivery_limit = p.integer("x-delivery-limit");
    if (auto mode = p.string("x-queue-mode"); mode && *mode != "default" && *mode != "lazy")
        p.fail("x-queue-mode", "{invalid_queue_mode,<<\"" + *mode + "\">>}");
    if (auto type = p.string("x-queue-type")) {
        if (*type == "classic") {
            a.type = QueueType::classic;
        } else if (*type == "quorum") {
            a.type = QueueType::quorum;
        } else if (*type == "stream") {
            a.type = QueueType::stream;
        } else {
            p.fail("x-queue-type", "{unsupported_queue_type,<<\"" + *type + "\">>}");
        }
    }
    if (a.type == QueueType::stream) {
        if (auto age = p.string("x-max-age")) {
            a.max_age_ms = parse_stream_duration_ms(*age);
            if (!a.max_age_ms) p.fail("x-max-age", "{invalid_max_age,<<\"" + *age + "\">>}");
        }
        if (auto seg = p.integer("x-stream-max-segment-size-bytes", true)) a.segment_bytes = *seg;
    }
    if (p.error) return *p.error;
    auto dedup = parse_dedup_arguments(args, "queue", queue, vhost, false);
    if (auto* e = std::get_if<AmqpError>(&dedup)) return *e;
    a.dedup = std::get<std::optional<DedupSettings>>(std::move(dedup));
    if (a.type == QueueType::quorum || a.type == QueueType::stream) {
        // RabbitMQ's rules for quorum queues (replicated there, single-node here).
        auto bad = [&](const char* property) {
            return amqp_error(reply::precondition_failed, "invalid property '" + std::string(property) +
                                                              "' for queue '" + std::string(queue) + "' in vhost '" +
                                                              std::string(vhost) + "'");
        };
        if (!flags.durable) return bad("non-durable");
        if (flags.exclusive) return bad("exclusive-owner");
        if (flags.auto_delete) return bad("auto-delete");
        if (a.max_priority)
            return p.invalid("x-max-priority", std::string("not supported by ") + queue_type_name(a.type) + " queues");
        if (a.type == QueueType::stream) {
            // What a stream does not do (RabbitMQ refuses these for streams too).
            for (const char* arg : {"x-max-length", "x-message-ttl", "x-expires", "x-dead-letter-exchange",
                                    "x-single-active-consumer", "x-overflow", "x-delivery-limit"})
                if (args.find(arg))
                    return amqp_error(reply::precondition_failed, "invalid arg '" + std::string(arg) +
                                                                      "' for queue '" + std::string(queue) +
                                                                      "' in vhost '" + std::string(vhost) +
                                                                      "' of queue type rabbit_stream_queue");
        }
    } else if (a.delivery_limit) {
        a.delivery_limit.reset();  // as RabbitMQ: a classic queue ignores it
    }
    return a;
}

}  // namespace sluice::broker
