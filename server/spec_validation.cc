// CreateJob validation: request fields, the spec (through the trainer's own
// parser), inputs, the estimate against the model, and the datasets
// (server/submit_datasets.h).
#include "server/spec_validation.h"

#include <google/protobuf/util/json_util.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_cache.h"
#include "common/lru_cache.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/submit_checks.h"
#include "server/submit_datasets.h"
#include "spec/estimate.h"
#include "spec/job_estimate.h"
#include "spec/model_source.h"
#include "spec/train_config.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Fields of the spec that name files the job reads.
constexpr const char* kInputFields[] = {"model", "data.train", "data.eval", "init_adapter"};

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
  // What the checks read: `local` is "" for a directory in object storage
  // and a model too large for the submit cache.
  SubmitInput source;
  std::shared_ptr<FileCache::Pin> pin;  // keeps a copy while the checks read it
};

// A copy of a model object in the submit cache (the readers go by the
// file's extension, so it keeps `name`'s), pinned while the checks read it;
// null when it does not fit, and the checks that need it are skipped.
absl::StatusOr<std::shared_ptr<FileCache::Pin>> CachedCopy(SubmitChecks& checks, ObjectStore& store,
                                                           const std::string& key,
                                                           const std::string& entry,
                                                           const std::string& where) {
  FileCache::Source source{[&]() -> absl::StatusOr<int64_t> {
                             ASSIGN_OR_RETURN(ObjectInfo info, store.Stat(key));
                             return info.size_bytes;
                           },
                           [&](const fs::path& target) { return store.GetFile(key, target); }};
  absl::StatusOr<FileCache*> cache = checks.objects();
  if (!cache.ok()) {
    NoteForOperator(absl::StrCat(where, ": ", cache.status().message()));
    return absl::UnavailableError(
        absl::StrCat(where, ": the scheduler cannot open its submit cache; retry later"));
  }
  absl::StatusOr<FileCache::Pin> pin = (*cache)->Get(entry, "", source);
  if (pin.ok()) return std::make_shared<FileCache::Pin>(std::move(*pin));
  NoteForOperator(absl::StrCat(where, ": ", pin.status().message()));
  if (pin.status().code() == absl::StatusCode::kResourceExhausted) return nullptr;
  return absl::UnavailableError(absl::StrCat(
      where, ": the scheduler could not copy the model to read its header; retry later"));
}

// The name a copy goes by in the submit cache: the object's identity, then
// its file name.
std::string EntryName(const std::string& identity, const std::string& name) {
  std::string file = fs::path(name).filename().string();
  if (file.empty() || file == "." || file == "..") file = "model";
  return absl::StrCat(identity, "/", file);
}

const InputPolicy& Policy(const ValidationContext& ctx) {
  static const InputPolicy kNothingGranted;
  return ctx.inputs != nullptr ? *ctx.inputs : kNothingGranted;
}

absl::StatusOr<Resolved> ResolveInput(const std::string& field, const std::string& value,
                                      const ValidationContext& ctx, SubmitChecks& checks) {
  const std::string where = absl::StrCat("spec.", field);
  Resolved r;
  r.source.field = field;
  r.source.value = value;
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
      // Uploads are immutable: the copy goes by the content's checksum.
      const std::string entry =
          EntryName(absl::StrCat("uploads/", Sha256Hex(file->file.sha256())), file->file.name());
      ASSIGN_OR_RETURN(
          r.pin, CachedCopy(checks, ctx.scheduler->storage(), file->storage_key, entry, where));
      if (r.pin != nullptr) r.source.local = r.pin->path();
      r.source.stamp = entry;
    } else if (field.rfind("data.", 0) == 0) {
      r.source.store = std::shared_ptr<ObjectStore>(&ctx.scheduler->storage(), [](ObjectStore*) {});
      r.source.key = file->storage_key;
      r.source.size = file->file.size_bytes();
      r.source.stamp = absl::StrCat("upload:", file->file.sha256());
    }
    return r;
  }
  if (absl::StartsWith(value, "s3://")) {
    RETURN_IF_ERROR(Policy(ctx).CheckObject(ctx.tenant, field, value));
    absl::StatusOr<ObjectUri> split = SplitObjectUri(value);
    if (!split.ok()) return Invalid(where, split.status().message());
    absl::StatusOr<std::unique_ptr<ObjectStore>> opened = OpenObjectStore(split->store_uri);
    if (!opened.ok()) return Invalid(where, opened.status().message());
    std::shared_ptr<ObjectStore> store = std::move(*opened);
    r.input.set_uri(value);
    r.input.set_name(split->key.substr(split->key.rfind('/') + 1));
    absl::StatusOr<ObjectInfo> object = store->Stat(split->key);
    if (!object.ok()) {
      // A directory (a Hugging Face model) is a prefix with objects under it.
      absl::StatusOr<std::vector<ObjectInfo>> listed = store->List(split->key + "/");
      if (!listed.ok() || listed->empty())
        return Invalid(where, absl::StrCat(value, ": not found (", object.status().message(), ")"));
      return r;
    }
    // An object may be replaced under its name: the copy goes by its size too.
    const std::string identity = absl::StrCat(value, "\n", object->size_bytes);
    if (field == "model") {
      const std::string entry =
          EntryName(absl::StrCat("objects/", Sha256Hex(identity)), r.input.name());
      ASSIGN_OR_RETURN(r.pin, CachedCopy(checks, *store, split->key, entry, where));
      if (r.pin != nullptr) r.source.local = r.pin->path();
      r.source.stamp = entry;
    } else if (field.rfind("data.", 0) == 0) {
      r.source.store = store;
      r.source.key = split->key;
      r.source.size = object->size_bytes;
      r.source.stamp = absl::StrCat("s3:", identity);
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
  r.source.local = path;
  return r;
}

// Reading a GGUF header parses the whole vocabulary, which dominated the cost
// of a submit: the shape is kept per file while its size and time stay the same.
// A copy in the submit cache is stamped by the caller (its file's time
// changes with every use).
estimate::ModelSource ReadModelSourceCached(const fs::path& model, std::string stamp) {
  std::error_code ec;
  const fs::path stamped = fs::is_directory(model, ec) ? model / "config.json" : model;
  if (stamp.empty())
    stamp = std::to_string(fs::file_size(stamped, ec)) + "@" +
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
                                      const std::string& stamp, int ranks) {
  if (model.empty()) return int64_t{0};
  try {
    estimate::ModelSource source = ReadModelSourceCached(model, stamp);
    // The same options a worker derives when it caps the trainer's memory.
    const estimate::EstimateOptions options = estimate::OptionsForJob(config, source, ranks);
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

  const std::shared_ptr<SubmitChecks> checks =
      ctx.checks != nullptr ? ctx.checks : SubmitChecks::For(ctx.cache_dir);

  // Resolve every input, then validate a copy of the spec in which each names
  // a local file, so checks on names (a packed base must be .gguf) see the
  // uploaded file's real name.
  json local_view = doc;
  std::map<std::string, Resolved> resolved;
  for (const char* field : kInputFields) {
    json* value = FieldOf(doc, field);
    if (value == nullptr || !value->is_string() || value->get<std::string>().empty()) continue;
    ASSIGN_OR_RETURN(Resolved r, ResolveInput(field, value->get<std::string>(), ctx, *checks));
    *FieldOf(local_view, field) =
        r.input.path().empty() ? absl::StrCat("/inputs/", r.input.name()) : r.input.path();
    job.inputs.push_back(r.input);
    resolved.emplace(field, std::move(r));
  }
  local_view["output_dir"] = "/job";
  train::TrainConfig config;
  try {
    config = train::ConfigFromJson(local_view, "spec");
  } catch (const std::invalid_argument& e) {
    return absl::InvalidArgumentError(e.what());
  }
  auto model = resolved.find("model");
  const SubmitInput* model_source = model == resolved.end() ? nullptr : &model->second.source;
  const int ranks = std::max(request.nodes(), 1) * std::max(request.devices_per_node(), 1);
  if (model_source != nullptr && model_source->local.empty() && !model_source->stamp.empty())
    NoteForOperator(
        absl::StrCat("spec.model ", model_source->value,
                     " is larger than the submit cache (--submit-cache-bytes): its memory is not "
                     "estimated and its tokenizer not loaded"));
  ASSIGN_OR_RETURN(job.estimated_bytes,
                   model_source == nullptr
                       ? EstimateBytes(config, fs::path(), "", ranks)
                       : EstimateBytes(config, model_source->local, model_source->stamp, ranks));
  // Last, as it may read whole files: every line of each dataset.
  std::vector<const SubmitInput*> datasets;
  for (const char* field : {"data.train", "data.eval"})
    if (auto it = resolved.find(field); it != resolved.end())
      datasets.push_back(&it->second.source);
  RETURN_IF_ERROR(
      CheckSubmitDatasets(config.data, model_source, datasets, ctx.cache_dir, ctx.tenant, *checks));
  job.needs_cuda = config.device == "cuda";
  job.config_json = doc.dump();
  return job;
}

Requirements RequirementsOf(const v1::CreateJobRequest& request, const ValidatedJob& job) {
  return Requirements{std::max(request.nodes(), 1), std::max(request.devices_per_node(), 1),
                      job.estimated_bytes, job.needs_cuda};
}

}  // namespace diablo::server
