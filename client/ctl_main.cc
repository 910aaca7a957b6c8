// diablo-ctl: submit, follow and fetch DiaBlo fine-tuning jobs on a
// diablo-scheduler.  Exit codes are in client/ctl.h and docs/cli.md.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

using diablo::ctl::Options;

// A subcommand and what runs when it is the one parsed.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

void AddGlobalOptions(CLI::App& app, Options& options, std::string& output) {
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
}

Command AddSubmit(CLI::App& app, const Options& options) {
  auto args = std::make_shared<diablo::ctl::SubmitArgs>();
  auto* submit = app.add_subcommand(
      "submit", "Submit a training job (the same YAML/JSON `diablo train` reads)");
  submit->add_option("config", args->config_path, "Job configuration file")
      ->required()
      ->check(CLI::ExistingFile);
  submit->add_option("--set", args->overrides,
                     "Override a field: --set optim.lr=3e-4 (repeatable)");
  submit->add_option("--name", args->name, "Job name (default: the file's name)");
  submit->add_option("--label", args->labels, "key=value label (repeatable)");
  submit->add_option("--priority", args->priority, "Higher runs first")->capture_default_str();
  submit->add_option("--devices", args->devices, "Devices per node")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  submit->add_option("--nodes", args->nodes, "Nodes (all start together)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  submit->add_option("--max-retries", args->max_retries, "Retries after a failed attempt")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  submit->add_option("--idempotency-key", args->idempotency_key,
                     "Submitting twice with one key makes one job");
  submit->add_flag("--queue-anyway", args->queue_anyway,
                   "Queue even if no registered worker can run it now");
  submit->add_flag("--no-upload", args->no_upload,
                   "Send paths as they are (storage the workers share)");
  submit->add_flag("--wait", args->wait,
                   "Watch the job until it ends (exit code from its final state)");
  return {submit, [&options, args] { return diablo::ctl::Submit(options, *args); }};
}

Command AddList(CLI::App& app, const Options& options) {
  struct Args {
    std::vector<std::string> states, labels;
    int limit = 50;
  };
  auto args = std::make_shared<Args>();
  auto* list = app.add_subcommand("list", "List jobs, newest first");
  list->add_option("--state", args->states, "Only jobs in this state (repeatable)");
  list->add_option("--label", args->labels, "Only jobs with this key=value label (repeatable)");
  list->add_option("--limit", args->limit, "At most this many")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  return {list, [&options, args] {
            return diablo::ctl::List(options, args->states, args->labels, args->limit);
          }};
}

// get, watch, cancel, logs and download: the verbs on one job.
std::vector<Command> AddJobCommands(CLI::App& app, const Options& options) {
  struct Args {
    std::string job_id, reason, out_dir, only;
    bool follow = false;
  };
  auto args = std::make_shared<Args>();
  std::vector<Command> commands;
  auto* get = app.add_subcommand("get", "Show a job");
  get->add_option("job", args->job_id, "Job id")->required();
  commands.push_back({get, [&options, args] { return diablo::ctl::Get(options, args->job_id); }});
  auto* watch = app.add_subcommand(
      "watch", "Follow a job until it ends: progress bar, evals, checkpoints, logs");
  watch->add_option("job", args->job_id, "Job id")->required();
  commands.push_back(
      {watch, [&options, args] { return diablo::ctl::Watch(options, args->job_id, false); }});
  auto* cancel = app.add_subcommand("cancel", "Cancel a job; its trainers stop within seconds");
  cancel->add_option("job", args->job_id, "Job id")->required();
  cancel->add_option("--reason", args->reason, "Recorded with the job");
  commands.push_back({cancel, [&options, args] {
                        return diablo::ctl::Cancel(options, args->job_id, args->reason);
                      }});
  auto* logs = app.add_subcommand("logs", "Print a job's log lines and events");
  logs->add_option("job", args->job_id, "Job id")->required();
  logs->add_flag("-f,--follow", args->follow, "Keep printing until the job ends");
  commands.push_back(
      {logs, [&options, args] { return diablo::ctl::Logs(options, args->job_id, args->follow); }});
  auto* download =
      app.add_subcommand("download", "Download a job's adapter and outputs (checksums verified)");
  download->add_option("job", args->job_id, "Job id")->required();
  download->add_option("--out", args->out_dir, "Directory to write into (default: ./<job id>)");
  download->add_option("--only", args->only,
                       "Only this artifact (or directory of artifacts), e.g. adapter");
  commands.push_back({download, [&options, args] {
                        return diablo::ctl::Download(options, args->job_id, args->out_dir,
                                                     args->only);
                      }});
  return commands;
}

// files upload, list and rm.
std::vector<Command> AddFileCommands(CLI::App& app, const Options& options) {
  struct Args {
    std::string path, name, id;
  };
  auto args = std::make_shared<Args>();
  auto* files = app.add_subcommand("files", "Datasets and models in the service's storage");
  files->require_subcommand(1);
  auto* upload =
      files->add_subcommand("upload", "Upload a file; prints upload://<id> for job specs");
  upload->add_option("path", args->path, "Local file")->required()->check(CLI::ExistingFile);
  upload->add_option("--name", args->name, "Name to store (default: the file's name)");
  auto* list = files->add_subcommand("list", "List uploaded files");
  auto* rm = files->add_subcommand("rm", "Delete an uploaded file");
  rm->add_option("id", args->id, "File id or upload://<id>")->required();
  return {{upload,
           [&options, args] { return diablo::ctl::FilesUpload(options, args->path, args->name); }},
          {list, [&options] { return diablo::ctl::FilesList(options); }},
          {rm, [&options, args] { return diablo::ctl::FilesRemove(options, args->id); }}};
}

// workers (the fleet listing) and workers revoke.
std::vector<Command> AddWorkerCommands(CLI::App& app, const Options& options) {
  struct Args {
    std::string id, reason;
  };
  auto args = std::make_shared<Args>();
  auto* workers = app.add_subcommand(
      "workers", "List registered workers (other tenants' jobs show only as a count)");
  auto* revoke = workers->add_subcommand(
      "revoke",
      "Revoke a worker (admin token): its credential stops working at once, its attempts are "
      "retried elsewhere, and the token it registered with may not register its name again. "
      "To shut the node out, revoke that token too (diablo-scheduler token revoke)");
  revoke->add_option("id", args->id, "Worker id, as `diablo-ctl workers` lists it")->required();
  revoke->add_option("--reason", args->reason, "Recorded in the events of the jobs it ran");
  // The revoke entry comes first: a parsed `revoke` also marks `workers` parsed.
  return {{revoke,
           [&options, args] { return diablo::ctl::RevokeWorker(options, args->id, args->reason); }},
          {workers, [&options] { return diablo::ctl::Workers(options); }}};
}

}  // namespace

int main(int argc, char** argv) {
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
  AddGlobalOptions(app, options, output);
  app.require_subcommand(1);

  std::vector<Command> commands;
  commands.push_back({app.add_subcommand("version", "Print client and server versions"),
                      [&options] { return diablo::ctl::Version(options); }});
  commands.push_back(AddSubmit(app, options));
  commands.push_back(AddList(app, options));
  for (Command& c : AddJobCommands(app, options)) commands.push_back(std::move(c));
  for (Command& c : AddFileCommands(app, options)) commands.push_back(std::move(c));
  for (Command& c : AddWorkerCommands(app, options)) commands.push_back(std::move(c));

  CLI11_PARSE(app, argc, argv);
  options.json = output == "json";
  for (const Command& command : commands)
    if (command.app->parsed()) return command.run();
  return diablo::ctl::kUsage;
}
