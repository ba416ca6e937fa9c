#include "broker/access_control.hpp"

#include <algorithm>

#include "broker/durability.hpp"
#include "net/amqp/wire.hpp"
#include "storage/store.hpp"

namespace sluice::broker {

namespace {

constexpr uint8_t kUserRecordVersion = 1;

std::string user_key(std::string_view name) {
    std::string k = "u";
    k.append(name);
    return k;
}

std::string permission_key(std::string_view vhost, std::string_view user) {
    std::string k = "p";
    amqp::put_longstr(k, vhost);
    k.append(user);
    return k;
}

constexpr std::string_view kInitialisedKey = "i";

std::string encode_user(const User& u) {
    std::string v;
    amqp::put_u8(v, kUserRecordVersion);
    amqp::put_u8(v, static_cast<uint8_t>(u.algorithm));
    amqp::put_longstr(v, u.password_hash);
    amqp::put_u16(v, static_cast<uint16_t>(std::min<size_t>(u.tags.size(), UINT16_MAX)));
    for (size_t i = 0; i < u.tags.size() && i < UINT16_MAX; ++i) amqp::put_longstr(v, u.tags[i]);
    return v;
}

std::string encode_permissions(const PermissionPatterns& p) {
    std::string v;
    amqp::put_longstr(v, p.configure);
    amqp::put_longstr(v, p.write);
    amqp::put_longstr(v, p.read);
    return v;
}

}  // namespace

bool User::has_tag(std::string_view tag) const { return std::find(tags.begin(), tags.end(), tag) != tags.end(); }

bool User::management_user() const {
    return has_tag("management") || has_tag("policymaker") || has_tag("monitoring") || has_tag("administrator");
}

std::variant<PermissionsPtr, std::string> CompiledPermissions::compile(PermissionPatterns patterns) {
    auto c = std::make_shared<CompiledPermissions>();
    for (Permission p : {Permission::configure, Permission::write, Permission::read}) {
        const std::string& source = patterns.of(p);
        try {
            // RabbitMQ: an empty pattern matches nothing but the empty name.
            c->regex_[static_cast<int>(p)] =
                std::regex(source.empty() ? std::string("^$") : source, std::regex::ECMAScript | std::regex::optimize);
        } catch (const std::regex_error& e) {
            return "invalid regular expression '" + source + "': " + e.what();
        }
    }
    c->patterns_ = std::move(patterns);
    return PermissionsPtr(std::move(c));
}

bool CompiledPermissions::allows(Permission p, std::string_view name) const {
    // RabbitMQ matches with re:run: a search anywhere in the name.
    return std::regex_search(name.begin(), name.end(), regex_[static_cast<int>(p)]);
}

std::string access_refused_text(ResourceKind kind, std::string_view name, std::string_view vhost,
                                std::string_view user) {
    std::string s = "access to ";
    s += kind == ResourceKind::queue ? "queue '" : "exchange '";
    s += resource_name(kind, name);
    s += "' in vhost '";
    s += vhost;
    s += "' refused for user '";
    s += user;
    s += "'";
    return s;
}

// --- users -----------------------------------------------------------------------

const User* AccessControl::find_user(std::string_view name) const {
    auto it = users_.find(name);
    return it == users_.end() ? nullptr : &it->second;
}

void AccessControl::put_user(User user) {
    durability_.put_record(user_key(user.name), encode_user(user));
    std::string name = user.name;
    users_.insert_or_assign(std::move(name), std::move(user));
    ++generation_;
}

bool AccessControl::delete_user(std::string_view name) {
    auto it = users_.find(name);
    if (it == users_.end()) return false;
    durability_.remove_record(user_key(name));
    users_.erase(it);
    for (auto& [vhost, users] : permissions_)
        if (auto p = users.find(name); p != users.end()) {
            durability_.remove_record(permission_key(vhost, name));
            users.erase(p);
        }
    ++generation_;
    return true;
}

const User* AccessControl::check_password(std::string_view name, std::string_view password) const {
    // A blank password never logs in, whatever the hash says (RabbitMQ's
    // internal backend refuses it too).
    if (password.empty()) return nullptr;
    const User* u = find_user(name);
    if (!u || u->password_hash.empty()) return nullptr;
    return verify_password(password, u->password_hash, u->algorithm) ? u : nullptr;
}

// --- permissions -------------------------------------------------------------------

std::optional<std::string> AccessControl::set_permissions(std::string_view user, std::string_view vhost,
                                                          PermissionPatterns p) {
    auto compiled = CompiledPermissions::compile(std::move(p));
    if (auto* error = std::get_if<std::string>(&compiled)) return *error;
    PermissionsPtr c = std::get<PermissionsPtr>(compiled);
    durability_.put_record(permission_key(vhost, user), encode_permissions(c->patterns()));
    auto v = permissions_.find(vhost);
    if (v == permissions_.end()) v = permissions_.emplace(std::string(vhost), decltype(v->second){}).first;
    v->second.insert_or_assign(std::string(user), std::move(c));
    ++generation_;
    return std::nullopt;
}

bool AccessControl::clear_permissions(std::string_view user, std::string_view vhost) {
    auto v = permissions_.find(vhost);
    if (v == permissions_.end()) return false;
    auto it = v->second.find(user);
    if (it == v->second.end()) return false;
    durability_.remove_record(permission_key(vhost, user));
    v->second.erase(it);
    if (v->second.empty()) permissions_.erase(v);
    ++generation_;
    return true;
}

PermissionsPtr AccessControl::permissions(std::string_view user, std::string_view vhost) const {
    auto v = permissions_.find(vhost);
    if (v == permissions_.end()) return nullptr;
    auto it = v->second.find(user);
    return it == v->second.end() ? nullptr : it->second;
}

void AccessControl::remove_vhost(std::string_view vhost) {
    auto v = permissions_.find(vhost);
    if (v == permissions_.end()) return;
    for (const auto& [user, p] : v->second) durability_.remove_record(permission_key(vhost, user));
    permissions_.erase(v);
    ++generation_;
}

// --- store -------------------------------------------------------------------------

bool AccessControl::recover(const storage::Store& store) {
    using storage::Column;
    std::string marker;
    if (!store.get(Column::meta, kInitialisedKey, marker)) return false;
    users_.clear();
    permissions_.clear();
    store.scan(Column::meta, "u", "v", [&](std::string_view key, std::string_view value) {
        amqp::WireReader r(value);
        User u;
        u.name = std::string(key.substr(1));
        uint8_t version = r.u8();
        uint8_t algorithm = r.u8();
        u.password_hash = std::string(r.longstr());
        uint16_t ntags = r.u16();
        for (uint16_t i = 0; i < ntags && r.ok(); ++i) u.tags.emplace_back(r.longstr());
        if (!r.ok() || version != kUserRecordVersion || algorithm > static_cast<uint8_t>(HashAlgorithm::md5))
            return true;  // a record this version cannot read: skipped, not fatal
        u.algorithm = static_cast<HashAlgorithm>(algorithm);
        std::string name = u.name;
        users_.emplace(std::move(name), std::move(u));
        return true;
    });
    store.scan(Column::meta, "p", "q", [&](std::string_view key, std::string_view value) {
        amqp::WireReader k(key.substr(1));
        std::string vhost(k.longstr());
        std::string user(key.substr(1 + k.position()));
        amqp::WireReader r(value);
        PermissionPatterns p;
        p.configure = std::string(r.longstr());
        p.write = std::string(r.longstr());
        p.read = std::string(r.longstr());
        if (!k.ok() || !r.ok()) return true;
        auto compiled = CompiledPermissions::compile(std::move(p));
        if (auto* c = std::get_if<PermissionsPtr>(&compiled)) permissions_[vhost].insert_or_assign(user, *c);
        return true;
    });
    ++generation_;
    return true;
}

void AccessControl::mark_initialised() { durability_.put_record(kInitialisedKey, ""); }

}  // namespace sluice::broker
