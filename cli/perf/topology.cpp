#include "cli/perf/roles.hpp"

namespace sluice::perf {

namespace m = amqp::method;

TopologySetup::TopologySetup(asio::io_context& ioc, const BrokerAddress& addr, asio::ip::tcp::endpoint ep,
                             ThreadStats& stats, RunControl& ctl, const PerfOptions& o, Mode mode)
    : AmqpClient(ioc, addr, ep,
                 mode == Mode::declare ? "setup" : (mode == Mode::remove ? "cleanup" : "inspect"), stats, ctl),
      o_(o), mode_(mode), queues_(o.queue_names()) {}

void TopologySetup::on_channel_open() {
    if (mode_ == Mode::inspect) {
        for (const auto& q : queues_) {
            m::QueueDeclare d;
            d.queue = q;
            d.passive = true;
            add_step(d, [this](std::string_view payload) {
                m::QueueDeclareOk ok;
                if (amqp::decode_arguments(payload.substr(4), ok) == amqp::DecodeError::none)
                    depth_ += ok.message_count;
            });
        }
        return;
    }
    // RPC requests go through the default exchange straight to the queues.
    const bool use_exchange = !o_.exchange.empty() && !o_.rpc;
    // Deleting first makes a rerun with other settings (durability, type) work;
    // a broker that answers a delete of something absent with an error is tolerated.
    if (use_exchange) {
        m::ExchangeDelete del;
        del.exchange = o_.exchange;
        add_step(del, {}, true);
    }
    for (const auto& q : queues_) {
        m::QueueDelete del;
        del.queue = q;
        add_step(del, {}, true);
    }
    if (mode_ == Mode::remove) return;
    if (use_exchange) {
        m::ExchangeDeclare ex;
        ex.exchange = o_.exchange;
        ex.type = o_.exchange_type_name();
        ex.durable = o_.persistent;
        if (o_.dedup_cache) {
            ex.arguments.set("x-message-deduplication", true);
            ex.arguments.set("x-cache-size", static_cast<int64_t>(o_.dedup_cache));
        }
        add_step(ex);
    }
    for (const auto& q : queues_) {
        m::QueueDeclare d;
        d.queue = q;
        d.durable = o_.persistent;
        if (o_.stream) d.arguments.set("x-queue-type", std::string("stream"));
        add_step(d);
        if (!use_exchange) continue;
        m::QueueBind b;
        b.queue = q;
        b.exchange = o_.exchange;
        if (o_.exchange_type != ExchangeType::fanout) b.routing_key = o_.routing_key ? *o_.routing_key : q;
        add_step(b);
    }
}

void TopologySetup::on_setup_done() {
    done_ = true;
    mark_ready();
    shutdown();
}

}  // namespace sluice::perf
