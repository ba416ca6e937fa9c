// declare / delete queue|exchange|binding and purge queue: PUT, POST and
// DELETE on /api/queues, /api/exchanges and /api/bindings of --vhost.
#include <boost/json/array.hpp>
#include <ostream>

#include "cli/ctl/command.hpp"

namespace sluice::ctl {

namespace json = boost::json;

namespace {

const Option kDurable{"durable", OptionKind::flag, "", "survive a restart (default; --no-durable for transient)"};
const Option kAutoDelete{"auto-delete", OptionKind::flag, "", "delete it when its last consumer / binding goes"};
const Option kInternal{"internal", OptionKind::flag, "", "clients cannot publish to it, only other exchanges"};
const Option kType{"type", OptionKind::value, "TYPE", "direct (default), fanout, topic or headers"};
const Option kArguments{"arguments", OptionKind::value, "JSON", "optional arguments, a JSON object"};
const Option kSource{"source", OptionKind::value, "EXCHANGE", "the exchange messages come from (required)"};
const Option kDestination{"destination", OptionKind::value, "NAME", "the queue or exchange they go to (required)"};
const Option kDestinationType{"destination-type", OptionKind::value, "queue|exchange",
                              "what the destination is (default queue)"};
const Option kRoutingKey{"routing-key", OptionKind::value, "KEY", "the binding key (default empty)"};
const Option kPropertiesKey{"properties-key", OptionKind::value, "KEY",
                            "the binding's properties_key from 'list bindings --json' (instead of matching)"};
const Option kIfUnused{"if-unused", OptionKind::flag, "", "only if it has no consumers (queue) or bindings (exchange)"};
const Option kIfEmpty{"if-empty", OptionKind::flag, "", "only if it holds no messages"};

std::string in_vhost(const Context& c) { return " in vhost '" + c.settings.vhost + "'"; }

// The API's name for the default exchange.
std::string exchange_path_name(const std::string& name) { return name.empty() ? "amq.default" : name; }

void declare_queue(Context& c) {
    const std::string& name = c.operands[0];
    json::object body;
    body["durable"] = c.args.flag("durable", true);
    body["auto_delete"] = c.args.flag("auto-delete");
    body["arguments"] = json_object_option(c.args, "arguments");
    json::value v = std::move(body);
    HttpReply r = c.api.send("PUT", api_path({"queues", c.settings.vhost, name}), &v);
    if (r.status == 201) c.out << "declared queue '" << name << "'" << in_vhost(c) << '\n';
    else c.out << "queue '" << name << "' already exists" << in_vhost(c) << '\n';
}

void declare_exchange(Context& c) {
    const std::string& name = c.operands[0];
    if (name.empty()) throw UsageError("the exchange name is empty (the default exchange cannot be declared)");
    json::object body;
    body["type"] = c.args.value("type").value_or("direct");
    body["durable"] = c.args.flag("durable", true);
    body["auto_delete"] = c.args.flag("auto-delete");
    body["internal"] = c.args.flag("internal");
    body["arguments"] = json_object_option(c.args, "arguments");
    json::value v = std::move(body);
    HttpReply r = c.api.send("PUT", api_path({"exchanges", c.settings.vhost, name}), &v);
    if (r.status == 201) c.out << "declared exchange '" << name << "'" << in_vhost(c) << '\n';
    else c.out << "exchange '" << name << "' already exists" << in_vhost(c) << '\n';
}

struct BindingEnds {
    std::string source, destination, type_letter, type_name;
};

BindingEnds binding_ends(const Context& c) {
    auto source = c.args.value("source");
    auto destination = c.args.value("destination");
    if (!source) throw UsageError("--source EXCHANGE is required");
    if (!destination) throw UsageError("--destination NAME is required");
    std::string type = c.args.value("destination-type").value_or("queue");
    if (type != "queue" && type != "exchange") throw UsageError("--destination-type is queue or exchange");
    return {*source, *destination, type == "queue" ? "q" : "e", type};
}

std::string bindings_path(const Context& c, const BindingEnds& b) {
    return api_path({"bindings", c.settings.vhost, "e", exchange_path_name(b.source), b.type_letter, b.destination});
}

std::string describe(const BindingEnds& b, const std::string& key) {
    return b.type_name + " '" + b.destination + "' to exchange '" + exchange_path_name(b.source) +
           "' with routing key '" + key + "'";
}

void declare_binding(Context& c) {
    BindingEnds b = binding_ends(c);
    std::string key = c.args.value("routing-key").value_or("");
    json::object body;
    body["routing_key"] = key;
    body["arguments"] = json_object_option(c.args, "arguments");
    json::value v = std::move(body);
    c.api.send("POST", bindings_path(c, b), &v);
    c.out << "bound " << describe(b, key) << in_vhost(c) << '\n';
}

void delete_queue(Context& c) {
    const std::string& name = c.operands[0];
    std::string path = api_path({"queues", c.settings.vhost, name});
    std::string query;
    if (c.args.flag("if-unused")) query += "if-unused=true";
    if (c.args.flag("if-empty")) query += std::string(query.empty() ? "" : "&") + "if-empty=true";
    c.api.send("DELETE", query.empty() ? path : path + "?" + query);
    c.out << "deleted queue '" << name << "'" << in_vhost(c) << '\n';
}

void delete_exchange(Context& c) {
    const std::string& name = c.operands[0];
    std::string path = api_path({"exchanges", c.settings.vhost, exchange_path_name(name)});
    if (c.args.flag("if-unused")) path += "?if-unused=true";
    c.api.send("DELETE", path);
    c.out << "deleted exchange '" << name << "'" << in_vhost(c) << '\n';
}

void delete_binding(Context& c) {
    BindingEnds b = binding_ends(c);
    std::string key = c.args.value("routing-key").value_or("");
    std::string props;
    if (auto given = c.args.value("properties-key")) {
        props = *given;
    } else {
        // Find the binding with this key and these arguments; its
        // properties_key names it in the DELETE path.
        json::value arguments = json_object_option(c.args, "arguments");
        json::value list = c.api.get(bindings_path(c, b));
        if (list.is_array())
            for (const json::value& item : list.get_array()) {
                if (!item.is_object()) continue;
                const json::object& o = item.get_object();
                const json::value* k = o.if_contains("routing_key");
                const json::value* a = o.if_contains("arguments");
                const json::value* p = o.if_contains("properties_key");
                if (!k || !k->is_string() || k->get_string() != key || !p || !p->is_string()) continue;
                bool same_args = a ? *a == arguments : arguments.get_object().empty();
                if (!same_args) continue;
                props = std::string(p->get_string());
                break;
            }
        if (props.empty()) throw ApiError(404, "no binding of " + describe(b, key) + in_vhost(c));
    }
    c.api.send("DELETE", bindings_path(c, b) + "/" + url_segment(props));
    if (c.args.has("properties-key"))
        c.out << "unbound " << b.type_name << " '" << b.destination << "' from exchange '"
              << exchange_path_name(b.source) << "' (properties key '" << props << "')" << in_vhost(c) << '\n';
    else
        c.out << "unbound " << describe(b, key) << in_vhost(c) << '\n';
}

void purge_queue(Context& c) {
    const std::string& name = c.operands[0];
    c.api.send("DELETE", api_path({"queues", c.settings.vhost, name, "contents"}));
    c.out << "purged queue '" << name << "'" << in_vhost(c) << '\n';
}

}  // namespace

std::vector<Command> object_commands() {
    return {
        {"declare queue", "NAME", "declare a queue in --vhost (unchanged if it exists with the same settings)",
         "Example: sluicectl declare queue orders --arguments '{\"x-max-length\": 1000}'",
         {kDurable, kAutoDelete, kArguments}, 1, 1, declare_queue},
        {"declare exchange", "NAME", "declare an exchange in --vhost",
         "Example: sluicectl declare exchange events --type topic",
         {kType, kDurable, kAutoDelete, kInternal, kArguments}, 1, 1, declare_exchange},
        {"declare binding", "", "bind a queue (or an exchange) to an exchange",
         "Example: sluicectl declare binding --source events --destination orders --routing-key 'order.*'",
         {kSource, kDestination, kDestinationType, kRoutingKey, kArguments}, 0, 0, declare_binding},
        {"delete queue", "NAME", "delete a queue and its messages", "", {kIfUnused, kIfEmpty}, 1, 1, delete_queue},
        {"delete exchange", "NAME", "delete an exchange and its bindings", "", {kIfUnused}, 1, 1, delete_exchange},
        {"delete binding", "", "remove a binding (the one with this routing key and these arguments)", "",
         {kSource, kDestination, kDestinationType, kRoutingKey, kArguments, kPropertiesKey}, 0, 0, delete_binding},
        {"purge queue", "NAME", "delete every ready message of a queue", "", {}, 1, 1, purge_queue},
    };
}

}  // namespace sluice::ctl
