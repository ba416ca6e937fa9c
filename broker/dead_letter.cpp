#include "broker/dead_letter.hpp"

#include <algorithm>

#include "net/amqp/properties.hpp"

namespace sluice::broker {

namespace {

std::optional<std::string_view> string_at(const amqp::FieldTable& t, std::string_view key) {
    const amqp::FieldValue* v = t.find(key);
    return v ? v->as_string() : std::nullopt;
}

}  // namespace

std::string_view death_reason_name(DeathReason reason) {
    switch (reason) {
        case DeathReason::rejected: return "rejected";
        case DeathReason::expired: return "expired";
        case DeathReason::maxlen: return "maxlen";
        case DeathReason::delivery_limit: return "delivery_limit";
    }
    return "rejected";
}

DeadLetter make_dead_letter(const Message& m, DeathReason reason, std::string_view queue, std::string_view dlx,
                            const std::optional<std::string>& routing_key, uint64_t now_s) {
    amqp::BasicProperties props;
    if (!amqp::decode_properties(m.properties(), props)) props = amqp::BasicProperties{};
    amqp::FieldTable& headers = props.headers ? *props.headers : props.headers.emplace();
    const std::string_view reason_name = death_reason_name(reason);

    // The routing keys the message was published with: its key and any CC.
    amqp::FieldArray keys;
    keys.emplace_back(std::string(m.routing_key()));
    if (const amqp::FieldValue* cc = headers.find("CC"); cc && cc->as_array())
        for (const amqp::FieldValue& k : *cc->as_array())
            if (auto s = k.as_string()) keys.emplace_back(std::string(*s));

    amqp::FieldArray deaths;
    if (const amqp::FieldValue* xd = headers.find("x-death"); xd && xd->as_array()) deaths = *xd->as_array();
    auto same = std::find_if(deaths.begin(), deaths.end(), [&](const amqp::FieldValue& v) {
        const amqp::FieldTable* t = v.as_table();
        return t && string_at(*t, "queue") == queue && string_at(*t, "reason") == reason_name;
    });
    if (same != deaths.end()) {
        // Seen here for this reason before: count it, and it becomes the most recent.
        amqp::FieldTable entry = *same->as_table();
        const amqp::FieldValue* count = entry.find("count");
        entry.set("count", int64_t{(count && count->as_int() ? *count->as_int() : 0) + 1});
        deaths.erase(same);
        deaths.insert(deaths.begin(), amqp::FieldValue(std::move(entry)));
    } else {
        amqp::FieldTable entry;
        entry.set("count", int64_t{1});
        entry.set("reason", std::string(reason_name));
        entry.set("queue", std::string(queue));
        entry.set("time", amqp::Timestamp{now_s});
        entry.set("exchange", std::string(m.exchange()));
        entry.set("routing-keys", keys);
        if (props.expiration) entry.set("original-expiration", *props.expiration);
        deaths.insert(deaths.begin(), amqp::FieldValue(std::move(entry)));
    }
    if (!headers.find("x-first-death-reason")) {
        headers.set("x-first-death-reason", std::string(reason_name));
        headers.set("x-first-death-queue", std::string(queue));
        headers.set("x-first-death-exchange", std::string(m.exchange()));
    }
    headers.set("x-death", deaths);
    props.expiration.reset();
    // As RabbitMQ: a dead-letter routing key replaces every key the message
    // was routed with, so its CC header goes too.
    if (routing_key) headers.erase("CC");

    std::string raw;
    amqp::encode_properties(raw, props);
    std::string_view key = routing_key ? std::string_view(*routing_key) : m.routing_key();
    auto copy = std::make_shared<Message>(dlx, key, raw, m.body_size());
    copy->append_body(m.body());
    if (!routing_key) {
        // The CC and BCC keys route it again. A message read back from the
        // store has lost them: its CC header still names those.
        std::vector<std::string> again = m.extra_routing_keys();
        if (again.empty())
            for (size_t i = 1; i < keys.size(); ++i) again.emplace_back(*keys[i].as_string());
        copy->set_extra_routing_keys(std::move(again));
    }
    DeadLetter out;
    out.message = std::move(copy);
    out.x_death.set("x-death", std::move(deaths));
    return out;
}

bool dead_letter_cycles(const amqp::FieldTable& x_death, std::string_view target, DeathReason reason) {
    if (reason == DeathReason::rejected) return false;
    const amqp::FieldValue* v = x_death.find("x-death");
    if (!v || !v->as_array()) return false;
    for (const amqp::FieldValue& d : *v->as_array()) {
        const amqp::FieldTable* t = d.as_table();
        if (!t) return false;
        if (string_at(*t, "reason") == std::string_view("rejected")) return false;
        if (string_at(*t, "queue") == target) return true;
    }
    return false;
}

MessagePtr with_delivery_count(const Message& m, uint32_t count) {
    amqp::BasicProperties props;
    if (!amqp::decode_properties(m.properties(), props)) props = amqp::BasicProperties{};
    if (!props.headers) props.headers.emplace();
    props.headers->set("x-delivery-count", int64_t{count});
    std::string raw;
    amqp::encode_properties(raw, props);
    auto copy = std::make_shared<Message>(m.exchange(), m.routing_key(), raw, m.body_size());
    copy->append_body(m.body());
    copy->set_extra_routing_keys(m.extra_routing_keys());
    copy->body_id = m.body_id;  // the stored entry still refers to the original
    return copy;
}

}  // namespace sluice::broker
