// The broker as a whole: status/overview, nodes, close connection,
// export/import of definitions, and users, permissions and vhosts (RabbitMQ's /api/users,
// /api/permissions and /api/vhosts).
#include <boost/json/parse.hpp>
#include <cstdio>
#include <fstream>
#include <istream>
#include <iterator>
#include <ostream>

#include "cli/ctl/command.hpp"
#include "cli/ctl/table.hpp"

namespace sluice::ctl {

namespace json = boost::json;

namespace {

const Option kReason{"reason", OptionKind::value, "TEXT", "the reason the client is told (connection.close)"};
const Option kTags{"tags", OptionKind::value, "TAGS", "comma-separated tags, like administrator or monitoring"};
const Option kConfigure{"configure", OptionKind::value, "REGEX", "what the user may declare and delete (default .*)"};
const Option kWrite{"write", OptionKind::value, "REGEX", "where the user may publish and bind (default .*)"};
const Option kRead{"read", OptionKind::value, "REGEX", "what the user may consume from (default .*)"};
const Option kDescription{"description", OptionKind::value, "TEXT", "what the vhost is for"};

// The field as text, "?" if the server did not send it (RabbitMQ leaves out
// what it has not sampled yet).
std::string text_at(const json::value& v, std::string_view dotted) {
    std::string t = v.is_object() ? cell_text(field_at(v.get_object(), dotted)) : "";
    return t.empty() ? "?" : t;
}

double number_at(const json::value& v, std::string_view dotted) {
    const json::value* f = v.is_object() ? field_at(v.get_object(), dotted) : nullptr;
    return f && f->is_number() ? f->to_number<double>() : 0;
}

std::string duration(double ms) {
    auto s = uint64_t(ms / 1000);
    char buf[64];
    if (s >= 86400) std::snprintf(buf, sizeof buf, "%llud %02lluh %02llum", (unsigned long long)(s / 86400),
                                  (unsigned long long)(s / 3600 % 24), (unsigned long long)(s / 60 % 60));
    else std::snprintf(buf, sizeof buf, "%lluh %02llum %02llus", (unsigned long long)(s / 3600),
                       (unsigned long long)(s / 60 % 60), (unsigned long long)(s % 60));
    return buf;
}

std::string mebibytes(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
    return buf;
}

std::string with_rate(const json::value& overview, const std::string& stat) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " (%.1f/s)", number_at(overview, "message_stats." + stat + "_details.rate"));
    std::string count = text_at(overview, "message_stats." + stat);
    return (count == "?" ? "0" : count) + buf;
}

void status(Context& c) {
    json::value o = c.api.get("/api/overview");
    if (c.args.flag("json")) return print_json(c.out, o);
    json::value nodes = c.api.get("/api/nodes");
    json::value node = nodes.is_array() && !nodes.get_array().empty() ? nodes.get_array()[0] : json::value();
    std::vector<std::pair<std::string, std::string>> p;
    p.emplace_back("node", text_at(o, "node"));
    p.emplace_back("version", text_at(o, "product_name") + " " + text_at(o, "product_version"));
    if (node.is_object()) {
        p.emplace_back("uptime", duration(number_at(node, "uptime")));
        p.emplace_back("memory", mebibytes(number_at(node, "mem_used")));
        p.emplace_back("file descriptors", text_at(node, "fd_used") + " of " + text_at(node, "fd_total"));
    }
    for (const char* what : {"connections", "channels", "consumers", "queues", "exchanges"})
        p.emplace_back(what, text_at(o, std::string("object_totals.") + what));
    p.emplace_back("messages", text_at(o, "queue_totals.messages") + " (ready " +
                                   text_at(o, "queue_totals.messages_ready") + ", unacknowledged " +
                                   text_at(o, "queue_totals.messages_unacknowledged") + ")");
    p.emplace_back("published", with_rate(o, "publish"));
    p.emplace_back("delivered", with_rate(o, "deliver_get"));
    p.emplace_back("acknowledged", with_rate(o, "ack"));
    std::string alarms;
    const json::value* a = o.is_object() ? o.get_object().if_contains("alarms") : nullptr;
    if (a && a->is_array())
        for (const json::value& alarm : a->get_array())
            alarms += (alarms.empty() ? "" : "; ") + text_at(alarm, "resource") + ": " + text_at(alarm, "reason");
    p.emplace_back("alarms", alarms.empty() ? "none" : alarms);
    write_pairs(c.out, p);
}

// One row per node of GET /api/nodes. In cluster mode (docs/cluster.md) each
// node has a role, ISR membership and replication lag; a standalone node has
// none of them and shows as one "standalone" row.
constexpr std::string_view kNodeColumns = "id,role,in_sync,state,log_index,lag_batches,lag_bytes,lag_ms,address";

json::object node_row(const json::value& n) {
    auto text = [&](std::string_view field) {
        std::string t = n.is_object() ? cell_text(field_at(n.get_object(), field)) : "";
        return t.empty() ? std::string("-") : t;
    };
    json::object row;
    bool clustered = n.is_object() && n.get_object().contains("role");
    row["id"] = clustered ? text("node_id") : text("name");
    if (!clustered) {
        row["role"] = "standalone";
        for (const char* f : {"in_sync", "state", "log_index", "lag_batches", "lag_bytes", "lag_ms", "address"})
            row[f] = "-";
        return row;
    }
    row["role"] = text("role");
    const json::value* sync = field_at(n.get_object(), "in_sync");
    row["in_sync"] = sync && sync->is_bool() ? (sync->get_bool() ? "yes" : "no") : "?";
    // A node whose etcd lease is gone is "down" whatever the leader last saw.
    const json::value* running = field_at(n.get_object(), "running");
    bool down = running && running->is_bool() && !running->get_bool();
    row["state"] = down ? std::string("down") : text("replication_state");
    for (const char* f : {"log_index", "lag_batches", "lag_bytes", "lag_ms"}) row[f] = text(f);
    row["address"] = text("host") + ":" + text("amqp_port");
    return row;
}

void nodes(Context& c) {
    json::value v = c.api.get("/api/nodes");
    if (!v.is_array()) throw ApiError(200, "the server's list of nodes is not a JSON array");
    if (c.args.flag("json")) return print_json(c.out, v);
    json::array rows;
    for (const json::value& n : v.get_array()) rows.push_back(node_row(n));
    write_table(c.out, split_columns(kNodeColumns), rows, !c.args.flag("no-headers"));
}

void close_connection(Context& c) {
    const std::string& name = c.operands[0];
    std::vector<std::pair<std::string, std::string>> headers;
    if (auto reason = c.args.value("reason")) headers.emplace_back("X-Reason", *reason);
    c.api.send("DELETE", api_path({"connections", name}), nullptr, headers);
    c.out << "closed connection '" << name << "'\n";
}

std::string definitions_path(const Context& c) {
    return c.settings.vhost_given ? api_path({"definitions", c.settings.vhost}) : api_path({"definitions"});
}

void export_definitions(Context& c) {
    HttpReply r = c.api.send("GET", definitions_path(c));
    ApiClient::parse(r);  // it must be JSON before it goes anywhere
    if (c.operands.empty() || c.operands[0] == "-") {
        c.out << r.body;
        if (r.body.empty() || r.body.back() != '\n') c.out << '\n';
        return;
    }
    const std::string& file = c.operands[0];
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    if (f) f << r.body;
    if (!f || !f.flush()) throw std::runtime_error("cannot write '" + file + "'");
    c.out << "exported definitions" << (c.settings.vhost_given ? " of vhost '" + c.settings.vhost + "'" : "")
          << " to " << file << '\n';
}

void import_definitions(Context& c) {
    const std::string& file = c.operands[0];
    std::string text;
    if (file == "-") {
        text.assign(std::istreambuf_iterator<char>(c.in), std::istreambuf_iterator<char>());
    } else {
        std::ifstream f(file, std::ios::binary);
        if (!f) throw std::runtime_error("cannot read '" + file + "'");
        text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    boost::system::error_code ec;
    json::value doc = json::parse(text, ec);
    if (ec || !doc.is_object())
        throw std::runtime_error(file + ": not a JSON object of definitions" + (ec ? " (" + ec.message() + ")" : ""));
    HttpReply r = c.api.send_text("POST", definitions_path(c), text);
    c.out << "imported definitions from " << file << '\n';
    json::value answer = ApiClient::parse(r);
    const json::value* warnings = answer.is_object() ? answer.get_object().if_contains("warnings") : nullptr;
    if (warnings && warnings->is_array())
        for (const json::value& w : warnings->get_array()) c.out << "warning: " << cell_text(&w) << '\n';
}

void add_user(Context& c) {
    const std::string& name = c.operands[0];
    std::string password;
    if (c.operands.size() > 1) {
        password = c.operands[1];
    } else {  // from stdin, so it does not show in the process list
        std::getline(c.in, password);
        if (!password.empty() && password.back() == '\r') password.pop_back();
    }
    if (password.empty()) throw UsageError("the password is empty (give PASSWORD, or one line on stdin)");
    json::object body;
    body["password"] = password;
    body["tags"] = c.args.value("tags").value_or("");
    json::value v = std::move(body);
    HttpReply r = c.api.send("PUT", api_path({"users", name}), &v);
    c.out << (r.status == 201 ? "added user '" : "updated user '") << name << "'\n";
}

void delete_user(Context& c) {
    c.api.send("DELETE", api_path({"users", c.operands[0]}));
    c.out << "deleted user '" << c.operands[0] << "'\n";
}

void set_permissions(Context& c) {
    const std::string& user = c.operands[0];
    json::object body;
    body["configure"] = c.args.value("configure").value_or(".*");
    body["write"] = c.args.value("write").value_or(".*");
    body["read"] = c.args.value("read").value_or(".*");
    std::string summary = "configure '" + std::string(body["configure"].get_string()) + "', write '" +
                          std::string(body["write"].get_string()) + "', read '" +
                          std::string(body["read"].get_string()) + "'";
    json::value v = std::move(body);
    c.api.send("PUT", api_path({"permissions", c.settings.vhost, user}), &v);
    c.out << "set permissions of user '" << user << "' in vhost '" << c.settings.vhost << "': " << summary << '\n';
}

void clear_permissions(Context& c) {
    const std::string& user = c.operands[0];
    c.api.send("DELETE", api_path({"permissions", c.settings.vhost, user}));
    c.out << "cleared permissions of user '" << user << "' in vhost '" << c.settings.vhost << "'\n";
}

void add_vhost(Context& c) {
    const std::string& name = c.operands[0];
    json::object body;
    if (auto d = c.args.value("description")) body["description"] = *d;
    if (auto t = c.args.value("tags")) body["tags"] = *t;
    json::value v = std::move(body);
    HttpReply r = c.api.send("PUT", api_path({"vhosts", name}), &v);
    if (r.status == 201) c.out << "added vhost '" << name << "'\n";
    else c.out << "vhost '" << name << "' already exists\n";
}

void delete_vhost(Context& c) {
    c.api.send("DELETE", api_path({"vhosts", c.operands[0]}));
    c.out << "deleted vhost '" << c.operands[0] << "'\n";
}

}  // namespace

std::vector<Command> admin_commands() {
    constexpr std::string_view kStatusDetails =
        "Counts of connections, channels, consumers, queues, exchanges and messages, message totals with their "
        "rates, the node's uptime, memory and file descriptors, and any alarm.";
    return {
        {"status", "", "the broker's state at a glance (the same as overview)", kStatusDetails, {kJsonOption}, 0, 0,
         status},
        {"overview", "", "the broker's state at a glance (the same as status)", kStatusDetails, {kJsonOption}, 0, 0,
         status},
        {"nodes", "", "list the nodes (in cluster mode: role, in-sync, replication lag)",
         "Columns: id; role (leader, follower; standalone outside cluster mode); in_sync (in the ISR,\n"
         "whose acks hold confirms back); state (the leader's view of its replication: streaming,\n"
         "snapshot, disconnected; down once its etcd lease is gone); log_index; lag_batches, lag_bytes,\n"
         "lag_ms; address (AMQP host:port). See docs/cluster.md.",
         {kJsonOption, kNoHeadersOption}, 0, 0, nodes},
        {"close connection", "NAME", "close a client connection (NAME as 'list connections' shows it)", "",
         {kReason}, 1, 1, close_connection},
        {"export", "[FILE]", "write the definitions (users, vhosts, queues, exchanges, bindings) as JSON",
         "To stdout unless FILE is given; only --vhost's queues, exchanges and bindings if --vhost is given.", {},
         0, 1, export_definitions},
        {"import", "FILE", "load definitions exported by sluicectl or RabbitMQ ('-' reads stdin)",
         "Only into --vhost if --vhost is given.", {}, 1, 1, import_definitions},
        {"add user", "NAME [PASSWORD]", "add a user, or change its password and tags",
         "Without PASSWORD the first line of stdin is the password.", {kTags}, 1, 2, add_user},
        {"delete user", "NAME", "delete a user", "", {}, 1, 1, delete_user},
        {"set permissions", "USER", "set a user's permissions in --vhost",
         "Example: sluicectl set permissions app --vhost prod --configure '^app\\.' --write '.*' --read '.*'",
         {kConfigure, kWrite, kRead}, 1, 1, set_permissions},
        {"clear permissions", "USER", "take away all of a user's permissions in --vhost", "", {}, 1, 1,
         clear_permissions},
        {"add vhost", "NAME", "add a virtual host", "", {kDescription, kTags}, 1, 1, add_vhost},
        {"delete vhost", "NAME", "delete a virtual host and everything in it", "", {}, 1, 1, delete_vhost},
    };
}

}  // namespace sluice::ctl
