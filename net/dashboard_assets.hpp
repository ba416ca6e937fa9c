// The dashboard's static files (net/dashboard/), embedded in the binary at
// build time by net/dashboard/embed.cmake: sluiced serves them with no files
// to install and no CDN.
#pragma once

#include <string_view>

namespace sluice::net {

struct DashboardAsset {
    std::string_view path;          // "/index.html"
    std::string_view content_type;  // "text/html; charset=utf-8"
    std::string_view body;
};

// The asset at this path, or nullptr.
const DashboardAsset* find_dashboard_asset(std::string_view path);

}  // namespace sluice::net
