// The quotas file and the uploads-in-progress tracker.
#include "server/quotas.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/absl_view.h"

namespace diablo::server {
namespace {

using nlohmann::json;

// The keys of a tenant's entry, the largest value each accepts (so a typo
// of a few digits is an error, not an effectively infinite limit), and where
// each goes.
struct Key {
  const char* name;
  int64_t max;
  std::optional<int64_t> QuotaOverrides::Entry::*field;
};
constexpr Key kKeys[] = {
    {"upload_bytes", int64_t{1} << 60, &QuotaOverrides::Entry::upload_bytes},
    {"files", 1'000'000'000, &QuotaOverrides::Entry::files},
    {"concurrent_uploads", 100'000, &QuotaOverrides::Entry::concurrent_uploads},
    {"running_jobs", 1'000'000, &QuotaOverrides::Entry::running_jobs},
    {"queued_jobs", 1'000'000, &QuotaOverrides::Entry::queued_jobs},
};
constexpr const char* kKnownKeys =
    "upload_bytes, files, concurrent_uploads, running_jobs, queued_jobs";

// `text` parsed (discarded when malformed), and in `repeated` the first key
// repeated within one object ("tenants.a.files"), if any: nlohmann keeps
// the last silently, and an operator who wrote a tenant twice should learn
// which entry would not apply rather than guess.
json ParseNoticingRepeats(std::string_view text, std::optional<std::string>* repeated_key) {
  std::vector<std::set<std::string>> seen;
  std::vector<std::string> path;
  std::optional<std::string>& repeated = *repeated_key;
  std::string last_key;
  json::parser_callback_t callback = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        seen.emplace_back();
        path.push_back(last_key);
        break;
      case json::parse_event_t::object_end:
        if (!seen.empty()) seen.pop_back();
        if (!path.empty()) path.pop_back();
        break;
      case json::parse_event_t::key:
        last_key = parsed.is_string() ? parsed.get<std::string>() : std::string();
        if (!seen.empty() && !seen.back().insert(last_key).second && !repeated) {
          std::string dotted;
          for (size_t i = 1; i < path.size(); ++i) absl::StrAppend(&dotted, path[i], ".");
          repeated = dotted + last_key;
        }
        break;
      default:
        break;
    }
    return true;
  };
  return json::parse(text, callback, /*allow_exceptions=*/false);
}

}  // namespace

absl::StatusOr<QuotaOverrides> QuotaOverrides::Parse(std::string_view text,
                                                     std::string_view source) {
  auto bad = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(AbslView(source), ": ", AbslView(what)));
  };
  std::optional<std::string> repeated;
  const json doc = ParseNoticingRepeats(text, &repeated);
  if (doc.is_discarded() || !doc.is_object())
    return bad("not a JSON object (expected {\"tenants\": {\"<tenant>\": {\"running_jobs\": 4}}})");
  if (repeated) return bad(absl::StrCat("\"", *repeated, "\" appears twice; keep one"));
  for (const auto& [key, unused] : doc.items())
    if (key != "tenants") return bad(absl::StrCat("unknown key \"", key, "\" (known: tenants)"));
  QuotaOverrides quotas;
  const auto tenants = doc.find("tenants");
  if (tenants == doc.end()) return quotas;
  if (!tenants->is_object()) return bad("\"tenants\" must be an object of tenant names");
  for (const auto& [tenant, limits] : tenants->items()) {
    // Tenant names are what `token create --tenant` accepts.
    if (tenant.empty() || tenant.size() > 64)
      return bad(
          absl::StrCat("tenants: \"", tenant, "\" is not a tenant name (1 to 64 characters)"));
    if (!limits.is_object())
      return bad(
          absl::StrCat("tenants.", tenant, " must be an object of limits (", kKnownKeys, ")"));
    Entry entry;
    for (const auto& [name, value] : limits.items()) {
      const Key* key = nullptr;
      for (const Key& k : kKeys)
        if (name == k.name) key = &k;
      if (key == nullptr)
        return bad(absl::StrCat("tenants.", tenant, ": unknown key \"", name,
                                "\" (known: ", kKnownKeys, ")"));
      // Integers only: 1e12 or 2.5 is more likely a mistake than a limit.
      const bool in_range = value.is_number_unsigned()
                                ? value.get<uint64_t>() <= static_cast<uint64_t>(key->max)
                                : value.is_number_integer() && value.get<int64_t>() >= 0 &&
                                      value.get<int64_t>() <= key->max;
      if (!in_range)
        return bad(absl::StrCat("tenants.", tenant, ".", name,
                                ": must be a whole number from 0 (no limit) to ", key->max,
                                ", got ", value.dump()));
      entry.*(key->field) = value.get<int64_t>();
    }
    quotas.tenants_[tenant] = entry;
  }
  return quotas;
}

absl::StatusOr<QuotaOverrides> QuotaOverrides::Load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat(file.string(), ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), file.string());
}

TenantLimits QuotaOverrides::Apply(std::string_view tenant, TenantLimits limits) const {
  const auto it = tenants_.find(tenant);
  if (it == tenants_.end()) return limits;
  const Entry& entry = it->second;
  limits.upload_bytes = entry.upload_bytes.value_or(limits.upload_bytes);
  limits.files = entry.files.value_or(limits.files);
  limits.concurrent_uploads = entry.concurrent_uploads.value_or(limits.concurrent_uploads);
  limits.running_jobs = entry.running_jobs.value_or(limits.running_jobs);
  limits.queued_jobs = entry.queued_jobs.value_or(limits.queued_jobs);
  return limits;
}

UploadTracker::InFlight UploadTracker::Of(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_flight_.find(tenant);
  return it == in_flight_.end() ? InFlight() : it->second;
}

UploadTracker::Slot UploadTracker::Acquire(const std::string& tenant, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  InFlight& mine = in_flight_[tenant];
  ++mine.uploads;
  mine.bytes += bytes;
  return Slot(this, tenant, bytes);
}

void UploadTracker::Release(const std::string& tenant, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_flight_.find(tenant);
  if (it == in_flight_.end()) return;
  it->second.bytes -= bytes;
  if (--it->second.uploads <= 0) in_flight_.erase(it);
}

UploadTracker::Slot::~Slot() {
  if (tracker_ != nullptr) tracker_->Release(tenant_, bytes_);
}

std::string HumanBytes(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 6) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? absl::StrCat(bytes, " bytes") : absl::StrFormat("%.1f %s", value, units[unit]);
}

}  // namespace diablo::server
