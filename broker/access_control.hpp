// Users, their tags and their permissions per vhost (RabbitMQ's internal
// authentication and authorisation backend), and the limits of each vhost.
//
// A permission is three regular expressions (configure, write, read) that a
// resource name must match (a search, as RabbitMQ's re:run, not a full
// match; "" matches nothing). They are compiled once, when set, and shared by
// every connection of that user to that vhost (PermissionView); a change
// bumps generation() so connections and channels drop what they cached.
//
// Records in the store's `meta` column (through Durability::put_record):
//   'u' user name            → algorithm, password hash, tags
//   'p' vhost (u32-prefixed) user → configure, write, read
//   'i'                      → "" once the defaults were created (RabbitMQ's
//                              first start: vhost "/", the default user)
// (vhosts themselves are Broker's: 'v' records.)
//
// Thread-safety: broker thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "broker/password_hash.hpp"

namespace sluice::storage {
class Store;
}

namespace sluice::broker {

class Durability;

enum class Permission : uint8_t { configure = 0, write = 1, read = 2 };
enum class ResourceKind : uint8_t { queue, exchange };

struct User {
    std::string name;
    std::string password_hash;  // base64(salt ++ hash); "" = no password login
    HashAlgorithm algorithm = HashAlgorithm::sha256;
    std::vector<std::string> tags;  // administrator, monitoring, management, policymaker, …

    bool has_tag(std::string_view tag) const;
    // May use the management API at all (RabbitMQ: management, policymaker,
    // monitoring or administrator).
    bool management_user() const;
};

struct PermissionPatterns {
    std::string configure, write, read;
    const std::string& of(Permission p) const {
        return p == Permission::configure ? configure : p == Permission::write ? write : read;
    }
};

// One user's permissions in one vhost, compiled.
class CompiledPermissions {
public:
    // The compiled form, or the reason a pattern is not a valid regex.
    static std::variant<std::shared_ptr<const CompiledPermissions>, std::string> compile(PermissionPatterns patterns);
    bool allows(Permission p, std::string_view name) const;
    const PermissionPatterns& patterns() const { return patterns_; }

private:
    PermissionPatterns patterns_;
    std::regex regex_[3];
};
using PermissionsPtr = std::shared_ptr<const CompiledPermissions>;

// RabbitMQ's vhost limits; negative = no limit.
struct VHostLimits {
    int64_t max_connections = -1;
    int64_t max_queues = -1;
    bool empty() const { return max_connections < 0 && max_queues < 0; }
};

class AccessControl {
public:
    explicit AccessControl(Durability& durability) : durability_(durability) {}

    // --- users ---------------------------------------------------------------
    const User* find_user(std::string_view name) const;
    const std::map<std::string, User, std::less<>>& users() const { return users_; }
    // Creates or replaces a user (written to the store).
    void put_user(User user);
    // Deletes the user and its permissions; false if there was none.
    bool delete_user(std::string_view name);
    // The user if `password` is theirs; null otherwise.
    const User* check_password(std::string_view user, std::string_view password) const;

    // --- permissions -----------------------------------------------------------
    // Sets (or replaces) user's permissions in vhost; the error text if a
    // pattern is not a valid regular expression.
    std::optional<std::string> set_permissions(std::string_view user, std::string_view vhost, PermissionPatterns p);
    bool clear_permissions(std::string_view user, std::string_view vhost);
    // Null when the user has no permissions in that vhost (no access at all).
    PermissionsPtr permissions(std::string_view user, std::string_view vhost) const;
    // Every (vhost, user, permissions), ordered by vhost then user.
    template <typename F>
    void for_each_permission(F&& f) const {
        for (const auto& [vhost, users] : permissions_)
            for (const auto& [user, p] : users) f(vhost, user, *p);
    }
    // The vhost is gone: so are the permissions in it.
    void remove_vhost(std::string_view vhost);
    // Bumped by every change of users or permissions.
    uint64_t generation() const { return generation_; }
    // The counter itself, for caches that compare with it on a hot path.
    const uint64_t& generation_counter() const { return generation_; }

    // --- store -----------------------------------------------------------------
    // Loads users and permissions; false if the store was never initialised
    // (no 'i' record: the caller creates the defaults, then mark_initialised).
    bool recover(const storage::Store& store);
    void mark_initialised();

private:
    Durability& durability_;
    std::map<std::string, User, std::less<>> users_;
    std::map<std::string, std::map<std::string, PermissionsPtr, std::less<>>, std::less<>> permissions_;  // vhost → user →
    uint64_t generation_ = 1;
};

// A connection's (or the management API's) view of one user's permissions
// in one vhost: looked up once, again only after a change (generation).
class PermissionView {
public:
    PermissionView() = default;
    PermissionView(const AccessControl& ac, std::string user, std::string vhost)
        : ac_(&ac), user_(std::move(user)), vhost_(std::move(vhost)) {}
    const CompiledPermissions* get() {
        if (!ac_) return nullptr;
        if (generation_ != ac_->generation()) {
            perms_ = ac_->permissions(user_, vhost_);
            generation_ = ac_->generation();
        }
        return perms_.get();
    }
    bool allows(Permission p, std::string_view name) {
        const CompiledPermissions* c = get();
        return c && c->allows(p, name);
    }
    const std::string& user() const { return user_; }
    const std::string& vhost() const { return vhost_; }

private:
    const AccessControl* ac_ = nullptr;
    std::string user_, vhost_;
    PermissionsPtr perms_;
    uint64_t generation_ = 0;
};

// "access to queue 'q' in vhost '/' refused for user 'u'" (403), as RabbitMQ
// words it; the default exchange is named "amq.default".
std::string access_refused_text(ResourceKind kind, std::string_view name, std::string_view vhost,
                                std::string_view user);
// The name permissions are matched against ("" → "amq.default" for exchanges).
inline std::string_view resource_name(ResourceKind kind, std::string_view name) {
    return kind == ResourceKind::exchange && name.empty() ? std::string_view("amq.default") : name;
}

}  // namespace sluice::broker
