// CreateJob validation: request fields, the spec (through the trainer's own
// parser), inputs, dataset records and the estimate against the model.
#include "server/spec_validation.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/lru_cache.h"
#include "common/status_macros.h"
#include "spec/estimate.h"
#include "spec/model_source.h"
#include "spec/train_config.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Fields of the spec that name files the job reads.
constexpr const char* kInputFields[] = {"model", "data.train", "data.eval", "init_adapter"};
// Dataset records checked at submit: the first MiB (whole lines).
constexpr int64_t kDataCheckBytes = 1 << 20;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

json* FieldOf(json& doc, absl::string_view dotted) {
  json* node = &doc;
  for (absl::string_view part : absl::StrSplit(dotted, '.')) {
    if (!node->is_object() || !node->contains(std::string(part))) return nullptr;
    node = &(*node)[std::string(part)];
  }
  return node;
}

absl::Status CheckRequestFields(const v1::CreateJobRequest& r) {
  if (r.name().size() > 200) return Invalid("name", "longer than 200 characters");
  if (r.labels_size() > 64) return Invalid("labels", "more than 64 labels");
  static const std::regex kLabelKey("[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}");
  for (const auto& [key, value] : r.labels()) {
    if (!std::regex_match(key, kLabelKey))
      return Invalid(absl::StrCat("labels[", key, "]"),
                     "keys are 1-63 letters, digits, '.', '_', '/' or '-'");
    if (value.size() > 256)
      return Invalid(absl::StrCat("labels[", key, "]"), "value longer than 256 characters");
  }
  if (r.priority() < -1000 || r.priority() > 1000)
    return Invalid("priority", "must be in [-1000, 1000]");
  if (r.nodes() < 0 || r.nodes() > 256) return Invalid("nodes", "must be in [1, 256] (0 means 1)");
  if (r.devices_per_node() < 0 || r.devices_per_node() > 64)
    return Invalid("devices_per_node", "must be in [1, 64] (0 means 1)");
  if (r.max_retries() < 0 || r.max_retries() > 100)
    return Invalid("max_retries", "must be in [0, 100]");
  if (r.idempotency_key().size() > 128)
    return Invalid("idempotency_key", "longer than 128 characters");
  if (!r.has_spec()) return Invalid("spec", "is required (the training configuration)");
  return absl::OkStatus();
}

struct Resolved {
  v1::Input input;
  fs::path local;  // a readable local copy or path, for the checks below ("" for directories)
};

// A local copy of an object, named `name` (readers go by the extension).
absl::StatusOr<fs::path> CachedCopy(ObjectStore& store, const std::string& key,
                                    const std::string& name, const ValidationContext& ctx) {
  const fs::path local = ctx.cache_dir / "objects" /
                         absl::StrReplaceAll(store.uri(), {{"/", "_"}, {":", "_"}}) / key / name;
  std::error_code ec;
  if (!fs::exists(local, ec)) RETURN_IF_ERROR(store.GetFile(key, local));
  return local;
}

const InputPolicy& Policy(const ValidationContext& ctx) {
  static const InputPolicy kNothingGranted;
  return ctx.inputs != nullptr ? *ctx.inputs : kNothingGranted;
}

absl::StatusOr<Resolved> ResolveInput(const std::string& field, const std::string& value,
                                      const ValidationContext& ctx) {
  const std::string where = absl::StrCat("spec.", field);
  Resolved r;
  r.input.set_field(field);
  if (absl::StartsWith(value, "upload://")) {
    const std::string id = value.substr(9);
    absl::StatusOr<FileRow> file = ctx.scheduler->GetFile(ctx.tenant, id);
    if (!file.ok())
      return Invalid(
          where, absl::StrCat(value, ": no uploaded file ", id, " (see diablo-ctl files list)"));
    r.input.set_key(file->storage_key);
    r.input.set_sha256(file->file.sha256());
    r.input.set_name(file->file.name());
    if (field == "model") {
      ASSIGN_OR_RETURN(
          r.local, CachedCopy(ctx.scheduler->storage(), file->storage_key, file->file.name(), ctx));
    }
    return r;
  }
  if (absl::StartsWith(value, "s3://")) {
    RETURN_IF_ERROR(Policy(ctx).CheckObject(ctx.tenant, field, value));
    absl::StatusOr<ObjectUri> split = SplitObjectUri(value);
    if (!split.ok()) return Invalid(where, split.status().message());
    absl::StatusOr<std::unique_ptr<ObjectStore>> store = OpenObjectStore(split->store_uri);
    if (!store.ok()) return Invalid(where, store.status().message());
    r.input.set_uri(value);
    r.input.set_name(split->key.substr(split->key.rfind('/') + 1));
    absl::StatusOr<ObjectInfo> object = (*store)->Stat(split->key);
    if (!object.ok()) {
      // A directory (a Hugging Face model) is a prefix with objects under it.
      absl::StatusOr<std::vector<ObjectInfo>> listed = (*store)->List(split->key + "/");
      if (!listed.ok() || listed->empty())
        return Invalid(where, absl::StrCat(value, ": not found (", object.status().message(), ")"));
      return r;
    }
    if (field == "model" || field.rfind("data.", 0) == 0) {
      ASSIGN_OR_RETURN(r.local, CachedCopy(**store, split->key, r.input.name(), ctx));
    }
    return r;
  }
  std::string path = value;
  if (absl::StartsWith(path, "file://")) path = path.substr(7);
  if (path.empty() || path[0] != '/')
    return Invalid(
        where,
        absl::StrCat("\"", value,
                     "\" is a relative path, which means nothing on the workers: "
                     "upload it (diablo-ctl submit uploads local files), or give upload://<id>, "
                     "s3://bucket/key or an absolute path on storage every worker mounts"));
  // Checked (and symlinks resolved) before anything at the path is touched.
  ASSIGN_OR_RETURN(path, Policy(ctx).CheckLocal(ctx.tenant, field, path));
  std::error_code ec;
  if (!fs::exists(path, ec))
    return Invalid(
        where, absl::StrCat(path,
                            ": no such file on the scheduler (plain paths must be on a filesystem "
                            "the scheduler and every worker share; otherwise upload it)"));
  r.input.set_path(path);
  r.local = path;
  return r;
}

// Reads the first records of a JSONL dataset and checks each is a JSON
// object the trainer can read, so a broken file fails the submit, not the job.
absl::Status CheckDataset(const std::string& field, const fs::path& local, ObjectStore* store,
                          const std::string& key) {
  const std::string where = absl::StrCat("spec.", field);
  std::string head;
  if (!local.empty()) {
    std::ifstream in(local, std::ios::binary);
    if (!in) return Invalid(where, absl::StrCat(local.string(), ": cannot be read"));
    head.resize(kDataCheckBytes);
    in.read(head.data(), kDataCheckBytes);
    head.resize(static_cast<size_t>(in.gcount()));
  } else if (store != nullptr) {
    ASSIGN_OR_RETURN(head, store->ReadRange(key, 0, kDataCheckBytes));
  } else {
    return absl::OkStatus();
  }
  const bool truncated = static_cast<int64_t>(head.size()) == kDataCheckBytes;
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  if (truncated && !lines.empty()) lines.pop_back();  // the last line may be cut
  int records = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    json record = json::parse(line.begin(), line.end(), nullptr, false);
    const std::string at = absl::StrCat(where, ": line ", i + 1);
    if (record.is_discarded() || !record.is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": not a JSON object (each line must be one record)"));
    if (!record.contains("messages") && !record.contains("instruction") && !record.contains("text"))
      return absl::InvalidArgumentError(
          absl::StrCat(at,
                       ": cannot tell the format: expected \"messages\" (chat), \"instruction\" + "
                       "\"output\" (alpaca) "
                       "or \"text\""));
    ++records;
  }
  if (records == 0) return Invalid(where, "has no records (an empty JSONL file)");
  return absl::OkStatus();
}

// Reading a GGUF header parses the whole vocabulary, which dominated the cost
// of a submit: the shape is kept per file while its size and time stay the same.
estimate::ModelSource ReadModelSourceCached(const fs::path& model) {
  std::error_code ec;
  const fs::path stamped = fs::is_directory(model, ec) ? model / "config.json" : model;
  const std::string stamp =
      std::to_string(fs::file_size(stamped, ec)) + "@" +
      std::to_string(fs::last_write_time(stamped, ec).time_since_epoch().count());
  // Paths are tenants' choice: at most kEntries are kept, the least recently
  // used forgotten first, so a stream of new paths cannot grow the
  // scheduler and the models in daily use stay cached.
  constexpr size_t kEntries = 256;
  static std::mutex mu;
  static LruCache<std::string, std::pair<std::string, estimate::ModelSource>> cache(kEntries);
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto* cached = cache.Get(model.string());
    if (cached != nullptr && cached->first == stamp) return cached->second;
  }
  estimate::ModelSource source = estimate::ReadModelSource(model.string());
  std::lock_guard<std::mutex> lock(mu);
  cache.Put(model.string(), {stamp, source});
  return source;
}

absl::StatusOr<int64_t> EstimateBytes(const train::TrainConfig& config, const fs::path& model,
                                      int ranks) {
  if (model.empty()) return int64_t{0};
  try {
    estimate::ModelSource source = ReadModelSourceCached(model);
    estimate::EstimateOptions options;
    // The config's enums are the estimator's (spec/fine_tune_method.h,
    // spec/precision.h).
    options.method = config.method.name;
    options.blocks = config.method.blocks;
    options.rank = config.method.rank;
    options.target_modules = config.method.target_modules;
    options.precision = config.precision;
    options.base_weights = config.base_weights;
    options.stored_weight_bytes = source.stored_weight_bytes;
    const train::OptimConfig& o = config.optim;
    options.micro_batch = o.micro_batch > 0
                              ? o.micro_batch
                              : std::max<int64_t>(1, o.global_batch / std::max(ranks, 1));
    options.seq_len = config.data.max_seq_len;
    options.gradient_checkpointing = config.gradient_checkpointing;
    return static_cast<int64_t>(estimate::EstimateTraining(source.config, options).memory.total);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<ValidatedJob> ValidateCreateJob(const v1::CreateJobRequest& request,
                                               const ValidationContext& ctx) {
  RETURN_IF_ERROR(CheckRequestFields(request));
  ValidatedJob job;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(request.spec(), &job.spec_json, print).ok())
    return Invalid("spec", "cannot be converted to JSON");
  json doc = json::parse(job.spec_json);
  doc.erase("output_dir");  // the worker chooses the job's directory
  // Proto JSON prints an empty repeated field as nothing; be explicit anyway.
  if (json* betas = FieldOf(doc, "optim.betas"); betas != nullptr && betas->empty())
    doc["optim"].erase("betas");
  if (json* targets = FieldOf(doc, "method.target_modules"); targets != nullptr && targets->empty())
    doc["method"].erase("target_modules");

  // Resolve every input, then validate a copy of the spec in which each names
  // a local file, so checks on names (a packed base must be .gguf) see the
  // uploaded file's real name.
  json local_view = doc;
  std::map<std::string, Resolved> resolved;
  for (const char* field : kInputFields) {
    json* value = FieldOf(doc, field);
    if (value == nullptr || !value->is_string() || value->get<std::string>().empty()) continue;
    ASSIGN_OR_RETURN(Resolved r, ResolveInput(field, value->get<std::string>(), ctx));
    *FieldOf(local_view, field) =
        r.input.path().empty() ? absl::StrCat("/inputs/", r.input.name()) : r.input.path();
    job.inputs.push_back(r.input);
    resolved[field] = std::move(r);
  }
  local_view["output_dir"] = "/job";
  train::TrainConfig config;
  try {
    config = train::ConfigFromJson(local_view, "spec");
  } catch (const std::invalid_argument& e) {
    return absl::InvalidArgumentError(e.what());
  }
  for (const char* field : {"data.train", "data.eval"}) {
    auto it = resolved.find(field);
    if (it == resolved.end()) continue;
    const Resolved& r = it->second;
    if (!r.input.key().empty()) {
      RETURN_IF_ERROR(CheckDataset(field, {}, &ctx.scheduler->storage(), r.input.key()));
    } else if (!r.local.empty()) {
      RETURN_IF_ERROR(CheckDataset(field, r.local, nullptr, ""));
    }
  }
  const int ranks = std::max(request.nodes(), 1) * std::max(request.devices_per_node(), 1);
  auto model = resolved.find("model");
  ASSIGN_OR_RETURN(
      job.estimated_bytes,
      EstimateBytes(config, model == resolved.end() ? fs::path() : model->second.local, ranks));
  job.needs_cuda = config.device == "cuda";
  job.config_json = doc.dump();
  return job;
}

Requirements RequirementsOf(const v1::CreateJobRequest& request, const ValidatedJob& job) {
  return Requirements{std::max(request.nodes(), 1), std::max(request.devices_per_node(), 1),
                      job.estimated_bytes, job.needs_cuda};
}

}  // namespace diablo::server
