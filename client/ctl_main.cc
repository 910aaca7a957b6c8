// diablo-ctl: submit, follow and fetch DiaBlo fine-tuning jobs on a
// diablo-scheduler.  Exit codes are in client/ctl.h and docs/cli.md.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "CLI/CLI.hpp"
#include "client/ctl.h"
#include "diablo/build_info.h"

namespace {

// ~/.config/diablo/ctl.toml when it exists (or $DIABLO_CONFIG).
std::string DefaultConfigFile() {
  if (const char* path = std::getenv("DIABLO_CONFIG")) return path;
  const char* home = std::getenv("HOME");
  if (home == nullptr) return "";
  const std::filesystem::path path =
      std::filesystem::path(home) / ".config" / "diablo" / "ctl.toml";
  std::error_code ec;
  return std::filesystem::exists(path, ec) ? path.string() : "";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace diablo::ctl;
  Options options;
  std::string output = "table";
  CLI::App app{
      "diablo-ctl: submit and follow DiaBlo fine-tuning jobs on a diablo-scheduler.\n\n"
      "The server and token come from --server/--token, DIABLO_SERVER/DIABLO_TOKEN, or a\n"
      "config file (--config, default ~/.config/diablo/ctl.toml) with lines like\n"
      "  server = \"scheduler.internal:50051\"\n  token = \"dbl_...\"\n\n"
      "Examples:\n"
      "  diablo-ctl submit job.yaml --wait          local files in job.yaml are uploaded\n"
      "  diablo-ctl list --state running\n"
      "  diablo-ctl watch j-3f9c0a1b2c4d5e6f\n"
      "  diablo-ctl download j-3f9c0a1b2c4d5e6f --out adapter/\n\n"
      "Exit codes: 0 ok, 1 the server refused or was unreachable, 2 bad usage or local\n"
      "input, 3 the job failed, 4 the job was cancelled, 5 a download failed its checksum."};
  app.set_config("--config", DefaultConfigFile(), "TOML file with server, token, tls-ca ...");
  app.set_version_flag("--client-version", std::string("diablo-ctl ") + diablo::kVersion);
  app.add_option("--server", options.rpc.server, "Scheduler address, host:port")
      ->envname("DIABLO_SERVER")
      ->capture_default_str();
  app.add_option("--token", options.rpc.token, "API token")->envname("DIABLO_TOKEN");
  app.add_option("--timeout", options.rpc.timeout_s, "Deadline for each call, in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--tls-ca", options.rpc.tls_ca,
                 "CA certificate (PEM) of the scheduler; enables TLS");
  app.add_option("--tls-cert", options.rpc.tls_cert, "Client certificate (PEM) for mutual TLS");
  app.add_option("--tls-key", options.rpc.tls_key, "Client private key (PEM) for mutual TLS");
  app.add_option("-o,--output", output, "table (for people) or json (one JSON document per line)")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "json"}));
  app.require_subcommand(1);

  auto* version = app.add_subcommand("version", "Print client and server versions");

  SubmitArgs submit_args;
  auto* submit = app.add_subcommand(
      "submit", "Submit a training job (the same YAML/JSON `diablo train` reads)");
  submit->add_option("config", submit_args.config_path, "Job configuration file")
      ->required()
      ->check(CLI::ExistingFile);
  submit->add_option("--set", submit_args.overrides,
                     "Override a field: --set optim.lr=3e-4 (repeatable)");
  submit->add_option("--name", submit_args.name, "Job name (default: the file's name)");
  submit->add_option("--label", submit_args.labels, "key=value label (repeatable)");
  submit->add_option("--priority", submit_args.priority, "Higher runs first")
      ->capture_default_str();
  submit->add_option("--devices", submit_args.devices, "Devices per node")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  submit->add_option("--nodes", submit_args.nodes, "Nodes (all start together)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  submit->add_option("--max-retries", submit_args.max_retries, "Retries after a failed attempt")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  submit->add_option("--idempotency-key", submit_args.idempotency_key,
                     "Submitting twice with one key makes one job");
  submit->add_flag("--queue-anyway", submit_args.queue_anyway,
                   "Queue even if no registered worker can run it now");
  submit->add_flag("--no-upload", submit_args.no_upload,
                   "Send paths as they are (storage the workers share)");
  submit->add_flag("--wait", submit_args.wait,
                   "Watch the job until it ends (exit code from its final state)");

  std::vector<std::string> states, labels;
  int limit = 50;
  auto* list = app.add_subcommand("list", "List jobs, newest first");
  list->add_option("--state", states, "Only jobs in this state (repeatable)");
  list->add_option("--label", labels, "Only jobs with this key=value label (repeatable)");
  list->add_option("--limit", limit, "At most this many")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));

  std::string job_id, reason, out_dir, only;
  bool follow = false;
  auto* get = app.add_subcommand("get", "Show a job");
  get->add_option("job", job_id, "Job id")->required();
  auto* watch = app.add_subcommand(
      "watch", "Follow a job until it ends: progress bar, evals, checkpoints, logs");
  watch->add_option("job", job_id, "Job id")->required();
  auto* cancel = app.add_subcommand("cancel", "Cancel a job; its trainers stop within seconds");
  cancel->add_option("job", job_id, "Job id")->required();
  cancel->add_option("--reason", reason, "Recorded with the job");
  auto* logs = app.add_subcommand("logs", "Print a job's log lines and events");
  logs->add_option("job", job_id, "Job id")->required();
  logs->add_flag("-f,--follow", follow, "Keep printing until the job ends");
  auto* download =
      app.add_subcommand("download", "Download a job's adapter and outputs (checksums verified)");
  download->add_option("job", job_id, "Job id")->required();
  download->add_option("--out", out_dir, "Directory to write into (default: ./<job id>)");
  download->add_option("--only", only,
                       "Only this artifact (or directory of artifacts), e.g. adapter");

  auto* files = app.add_subcommand("files", "Datasets and models in the service's storage");
  files->require_subcommand(1);
  std::string path, name;
  auto* upload =
      files->add_subcommand("upload", "Upload a file; prints upload://<id> for job specs");
  upload->add_option("path", path, "Local file")->required()->check(CLI::ExistingFile);
  upload->add_option("--name", name, "Name to store (default: the file's name)");
  auto* files_list = files->add_subcommand("list", "List uploaded files");
  auto* files_rm = files->add_subcommand("rm", "Delete an uploaded file");
  files_rm->add_option("id", job_id, "File id or upload://<id>")->required();
  auto* workers = app.add_subcommand("workers", "List registered workers");

  CLI11_PARSE(app, argc, argv);
  options.json = output == "json";

  if (version->parsed()) return Version(options);
  if (submit->parsed()) return Submit(options, submit_args);
  if (list->parsed()) return List(options, states, labels, limit);
  if (get->parsed()) return Get(options, job_id);
  if (watch->parsed()) return Watch(options, job_id, false);
  if (cancel->parsed()) return Cancel(options, job_id, reason);
  if (logs->parsed()) return Logs(options, job_id, follow);
  if (download->parsed()) return Download(options, job_id, out_dir, only);
  if (upload->parsed()) return FilesUpload(options, path, name);
  if (files_list->parsed()) return FilesList(options);
  if (files_rm->parsed()) return FilesRemove(options, job_id);
  if (workers->parsed()) return Workers(options);
  return kUsage;
}
