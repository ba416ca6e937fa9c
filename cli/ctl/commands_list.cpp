// list queues|exchanges|bindings|connections|channels|consumers|users|vhosts|permissions:
// GET /api/{kind}[/{vhost}] as an aligned table of chosen fields, or as JSON.
#include <boost/json/array.hpp>
#include <ostream>

#include "cli/ctl/command.hpp"
#include "cli/ctl/table.hpp"

namespace sluice::ctl {

namespace json = boost::json;

namespace {

struct ListKind {
    std::string_view kind;
    bool per_vhost;  // /api/{kind}/{vhost} lists one vhost's
    std::string_view columns;
    std::string_view what;
};

constexpr ListKind kKinds[] = {
    {"queues", true, "vhost,name,durable,auto_delete,messages,messages_ready,messages_unacknowledged,consumers",
     "queues"},
    {"exchanges", true, "vhost,name,type,durable,auto_delete,internal", "exchanges"},
    {"bindings", true, "vhost,source,destination,destination_type,routing_key", "bindings"},
    {"connections", false, "name,user,vhost,state,channels,peer_host,peer_port", "client connections"},
    {"channels", false, "name,user,vhost,number,consumer_count,messages_unacknowledged,prefetch_count",
     "channels of every connection"},
    {"consumers", true, "queue.vhost,queue.name,consumer_tag,channel_details.name,ack_required,prefetch_count",
     "consumers"},
    {"users", false, "name,tags", "users"},
    {"vhosts", false, "name,messages,messages_ready,messages_unacknowledged", "virtual hosts"},
    {"permissions", true, "user,vhost,configure,write,read", "users' permissions"},
};

const ListKind& kind_of(const Context& c) {
    // The command's name is "list KIND".
    for (const ListKind& k : kKinds)
        if (c.command.name.substr(5) == k.kind) return k;
    throw std::logic_error("no list kind for '" + std::string(c.command.name) + "'");
}

std::string query_columns(const std::vector<std::string>& columns) {
    std::string q;
    for (const std::string& c : columns) {
        if (!q.empty()) q += ',';
        q += url_segment(c);
    }
    return q;
}

void run_list(Context& c) {
    const ListKind& k = kind_of(c);
    std::vector<std::string> columns = split_columns(c.args.value("columns").value_or(std::string(k.columns)));
    std::string path;
    if (k.per_vhost && c.settings.vhost_given) {
        path = k.kind == "permissions" ? api_path({"vhosts", c.settings.vhost, "permissions"})
                                       : api_path({k.kind, c.settings.vhost});
    } else {
        path = api_path({k.kind});
    }
    // The server keeps only the chosen fields (RabbitMQ's ?columns=), so
    // --json --columns prints them as the API would.
    if (c.args.has("columns")) path += "?columns=" + query_columns(columns);
    json::value v = c.api.get(path);
    if (!v.is_array()) throw ApiError(200, "the server's list of " + std::string(k.kind) + " is not a JSON array");
    if (c.args.flag("json")) return print_json(c.out, v);
    write_table(c.out, columns, v.get_array(), !c.args.flag("no-headers"));
}

}  // namespace

std::vector<Command> list_commands() {
    // Command holds string_views: the composed texts live as long as the program.
    static const std::vector<std::string> texts = [] {
        std::vector<std::string> t;
        for (const ListKind& k : kKinds) {
            t.push_back("list " + std::string(k.kind));
            t.push_back("list " + std::string(k.what) + (k.per_vhost ? " (every vhost's, or only --vhost's)" : ""));
            t.push_back("Default columns: " + std::string(k.columns) + ".");
        }
        return t;
    }();
    std::vector<Command> out;
    for (size_t i = 0; i < std::size(kKinds); ++i) {
        Command cmd;
        cmd.name = texts[3 * i];
        cmd.summary = texts[3 * i + 1];
        cmd.details = texts[3 * i + 2];
        cmd.options = {kJsonOption, kColumnsOption, kNoHeadersOption};
        cmd.run = run_list;
        out.push_back(std::move(cmd));
    }
    return out;
}

}  // namespace sluice::ctl
