// diablo-scheduler: serves the DiaBlo job API until SIGINT or SIGTERM; the
// `token` subcommands manage API tokens in the same database.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "CLI/CLI.hpp"
#include "common/state_dir.h"
#include "diablo/build_info.h"
#include "server/auth.h"
#include "server/db.h"
#include "server/scheduler_server.h"

namespace {

// Blocks SIGINT/SIGTERM in every thread (gRPC's included) and returns the set,
// so that the main thread alone receives them through sigwait().
sigset_t BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "diablo-scheduler: %s\n", std::string(status.message()).c_str());
  return 1;
}

struct TokenArgs {
  std::string tenant = "default", role = "user", name, id;
};

int RunToken(const std::string& data_dir, const std::string& verb, const TokenArgs& args) {
  std::filesystem::create_directories(data_dir);
  auto db = diablo::server::Db::Open((std::filesystem::path(data_dir) / "scheduler.db").string());
  if (!db.ok()) return Fail(db.status());
  if (verb == "create") {
    auto role = diablo::server::ParseRole(args.role);
    if (!role.ok()) return Fail(role.status());
    std::string id;
    auto secret = diablo::server::CreateToken(**db, args.tenant, *role, args.name, &id);
    if (!secret.ok()) return Fail(secret.status());
    // The secret alone on stdout, so scripts can capture it; the rest on stderr.
    std::fprintf(stderr, "created token %s (tenant %s, role %s); the secret is shown only once:\n",
                 id.c_str(), args.tenant.c_str(), args.role.c_str());
    std::printf("%s\n", secret->c_str());
    return 0;
  }
  if (verb == "list") {
    auto tokens = diablo::server::ListTokens(**db);
    if (!tokens.ok()) return Fail(tokens.status());
    std::printf("%-20s %-16s %-7s %-8s %s\n", "ID", "TENANT", "ROLE", "STATUS", "NAME");
    for (const auto& t : *tokens)
      std::printf("%-20s %-16s %-7s %-8s %s\n", t.id.c_str(), t.tenant.c_str(),
                  diablo::server::RoleName(t.role), t.revoked ? "revoked" : "active",
                  t.name.c_str());
    return 0;
  }
  absl::Status revoked = diablo::server::RevokeToken(**db, args.id);
  if (!revoked.ok()) return Fail(revoked);
  std::fprintf(stderr, "revoked %s\n", args.id.c_str());
  return 0;
}

// Settings of the serving command that are not SchedulerOptions.
struct ServeFlags {
  double grace_seconds = 10;
  bool no_auth = false;
  std::string metrics_token_file;
  std::string input_grants_file;
  std::string quotas_file;
};

// Per-tenant limits and the limits on failed authentications.
void AddQuotaOptions(CLI::App& app, diablo::SchedulerOptions& options, ServeFlags& flags) {
  diablo::server::TenantLimits& limits = options.scheduler.tenant_limits;
  app.add_option("--max-upload-bytes-per-tenant", limits.upload_bytes,
                 "Bytes of uploaded files one tenant may hold (1TiB = 2^40, 1TB = 10^12); an "
                 "upload that would pass it is refused before its data is read; 0: no limit")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/true))
      ->capture_default_str();
  app.add_option("--max-files-per-tenant", limits.files,
                 "Uploaded files one tenant may hold; 0: no limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1000000000}));
  app.add_option("--max-concurrent-uploads", limits.concurrent_uploads,
                 "Uploads one tenant may have in progress at once; 0: no limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{100000}));
  app.add_option("--max-running-jobs", limits.running_jobs,
                 "Jobs one tenant may have placed or running at once; its further jobs wait in "
                 "the queue (they do not fail) while other tenants' jobs are placed.  0: no limit, "
                 "the default, so one tenant may use a fleet the others leave idle; set it (or "
                 "running_jobs in --quotas) to share a busy fleet")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}));
  app.add_option("--quotas", flags.quotas_file,
                 "JSON file of per-tenant overrides of these limits, e.g. {\"tenants\": "
                 "{\"ml-team\": {\"upload_bytes\": 5497558138880, \"files\": 50000, "
                 "\"concurrent_uploads\": 8, \"running_jobs\": 16, \"queued_jobs\": 5000}}}; "
                 "0 means no limit, a key left out keeps the flag's value")
      ->envname("DIABLO_QUOTAS")
      ->check(CLI::ExistingFile);
  app.add_option("--auth-failure-rate", options.auth.failures_per_second,
                 "Calls with an unknown or revoked token one client address may make per second "
                 "(IPv6: per /64); past it and --auth-failure-burst its calls are refused before "
                 "the token store is read")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1e6));
  app.add_option("--auth-failure-burst", options.auth.failure_burst,
                 "Such calls one address may make in a burst above --auth-failure-rate")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e7));
  app.add_option("--token-cache-seconds", options.auth.token_cache_s,
                 "Seconds a verified token is trusted without reading the token store again; a "
                 "`token revoke` takes effect within this time.  0: read it on every call")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 300.0));
}

// What checking a submit may cost the scheduler (server/submit_checks.h).
void AddSubmitCheckOptions(CLI::App& app, diablo::SchedulerOptions& options) {
  diablo::server::SubmitCheckOptions& checks = options.submit_checks;
  app.add_option("--dataset-check-bytes", checks.dataset_check_bytes,
                 "Each dataset up to this size is checked line by line at submit (with the "
                 "model's tokenizer when the scheduler can load it); of a larger one the first "
                 "this many bytes, and the trainer checks the rest.  0: datasets are not read "
                 "at submit")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/true))
      ->capture_default_str();
  app.add_option("--max-concurrent-dataset-checks", checks.concurrent_dataset_checks,
                 "Datasets checked at once, all tenants together (each check uses one core); a "
                 "submit waits up to 10 s for one to finish, then is refused as UNAVAILABLE")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--max-concurrent-dataset-checks-per-tenant",
                 checks.concurrent_dataset_checks_per_tenant,
                 "Of those, how many one tenant's submits may hold, so that one tenant's "
                 "parallel submits cannot keep the others waiting")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--tokenizer-cache-entries", checks.tokenizer_cache_entries,
                 "Models whose tokenizer the scheduler keeps loaded for submit checks (tens of "
                 "MB each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--submit-cache-bytes", checks.object_cache_bytes,
                 "Disk for the scheduler's copies of uploaded and s3:// models, read at submit "
                 "for their shape and tokenizer (<data-dir>/cache/objects); the least recently "
                 "used go first.  A larger model is not copied, and its memory is then not "
                 "estimated at submit")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/true))
      ->capture_default_str();
}

void AddServeOptions(CLI::App& app, diablo::SchedulerOptions& options, ServeFlags& flags) {
  app.add_option("--data-dir", options.data_dir,
                 "Directory for scheduler.db, scratch space and caches (default: "
                 "$XDG_STATE_HOME/diablo/scheduler, else ~/.local/state/diablo/scheduler)")
      ->envname("DIABLO_DATA_DIR");
  app.add_option("--listen", options.listen_address,
                 "Address to serve on, host:port; port 0 picks a free port")
      ->envname("DIABLO_LISTEN")
      ->capture_default_str();
  app.add_option(
         "--storage", options.storage_uri,
         "Object storage: file:///dir or s3://bucket[/prefix] (default file://<data-dir>/storage)")
      ->envname("DIABLO_STORAGE");
  app.add_option("--metrics-listen", options.metrics_listen,
                 "Serve Prometheus /metrics on host:port; a bare port (or :port) binds loopback "
                 "only, 0.0.0.0:port every interface")
      ->envname("DIABLO_METRICS_LISTEN");
  app.add_option("--metrics-token-file", flags.metrics_token_file,
                 "File holding a token /metrics then requires as the HTTP basic-auth password "
                 "(Prometheus: basic_auth.password_file)")
      ->envname("DIABLO_METRICS_TOKEN_FILE")
      ->check(CLI::ExistingFile);
  app.add_flag("--metrics-job-names", options.metrics_job_names,
               "Label per-job series with job names as well as ids (names are tenants' free text: "
               "off by default)");
  app.add_option("--input-grants", flags.input_grants_file,
                 "JSON file of the object prefixes and local roots each tenant's jobs may read "
                 "besides their uploads, e.g. {\"tenants\": {\"ml-team\": {\"object_prefixes\": "
                 "[\"s3://datasets/ml-team\"], \"local_roots\": [\"/mnt/shared/ml-team\"]}}}; "
                 "without it jobs read only uploads")
      ->envname("DIABLO_INPUT_GRANTS")
      ->check(CLI::ExistingFile);
  app.add_flag("--no-auth", flags.no_auth,
               "Accept calls without a token (tenant \"default\"); for a single-user machine only");
  app.add_option("--tls-cert", options.tls_cert, "Server certificate (PEM); enables TLS");
  app.add_option("--tls-key", options.tls_key, "Server private key (PEM)");
  app.add_option("--tls-client-ca", options.tls_client_ca,
                 "CA (PEM) that signs client certificates; requires them (mutual TLS)");
  app.add_option("--heartbeat-interval", options.scheduler.heartbeat_interval_s,
                 "Seconds between worker heartbeats")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--lease-timeout", options.scheduler.lease_timeout_s,
                 "Seconds without a heartbeat before a worker's jobs are retried elsewhere")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 3600.0));
  app.add_option("--stall-timeout", options.scheduler.stall_timeout_s,
                 "Seconds a trainer may report nothing before its attempt is failed and retried")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--max-infrastructure-retries", options.scheduler.max_infrastructure_retries,
                 "Attempts a job may lose to the fleet (lost workers, expired leases, drains) "
                 "before it fails; these never spend the job's own --max-retries")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000));
  app.add_option("--max-queued-jobs", options.scheduler.max_queued_jobs_per_tenant,
                 "Queued jobs allowed per tenant")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  AddQuotaOptions(app, options, flags);
  AddSubmitCheckOptions(app, options);
  app.add_option("--rate-limit", options.auth.requests_per_second,
                 "API requests per second per token")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 1e6));
  app.add_option("--rate-burst", options.auth.burst, "Requests a token may burst above the rate")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e7));
  app.add_option("--rendezvous-port-base", options.scheduler.rendezvous_port_base,
                 "First port handed to multi-node gangs for their rendezvous")
      ->capture_default_str()
      ->check(CLI::Range(1024, 64535));
  app.add_option("--max-receive-bytes", options.max_receive_message_bytes,
                 "Largest request message accepted, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(1024, 1 << 30));
  app.add_option("--max-concurrent-streams", options.max_concurrent_streams,
                 "Concurrent calls allowed on one client connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--shutdown-grace", flags.grace_seconds,
                 "Seconds to let running calls finish after SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
}

// The `token` subcommands (create, list, revoke) on `app`; returns `token`.
CLI::App* AddTokenCommands(CLI::App& app, TokenArgs& token_args) {
  auto* token = app.add_subcommand("token", "Manage API tokens (in <data-dir>/scheduler.db)");
  token->require_subcommand(1);
  auto* create =
      token->add_subcommand("create", "Create a token and print its secret (once) on stdout");
  create->add_option("--tenant", token_args.tenant, "Tenant the token's jobs belong to")
      ->capture_default_str();
  create
      ->add_option("--role", token_args.role, "user (jobs, files), worker (agents) or admin (both)")
      ->capture_default_str()
      ->check(CLI::IsMember({"user", "worker", "admin"}));
  create->add_option("--name", token_args.name, "A note to recognise the token by");
  token->add_subcommand("list", "List tokens (never their secrets)");
  auto* revoke = token->add_subcommand("revoke", "Revoke a token: calls with it fail from now on");
  revoke->add_option("id", token_args.id, "Token id (from token list)")->required();
  return token;
}

// Serves until SIGINT or SIGTERM, then drains for the grace period.
int Serve(diablo::SchedulerOptions& options, const ServeFlags& flags) {
  options.auth.enabled = !flags.no_auth;
  if (!flags.input_grants_file.empty()) {
    absl::StatusOr<diablo::InputPolicy> grants = diablo::InputPolicy::Load(flags.input_grants_file);
    if (!grants.ok()) {
      std::fprintf(stderr, "diablo-scheduler: --input-grants %s\n",
                   std::string(grants.status().message()).c_str());
      return 2;
    }
    options.inputs = std::move(*grants);
  }
  if (!flags.quotas_file.empty()) {
    absl::StatusOr<diablo::server::QuotaOverrides> quotas =
        diablo::server::QuotaOverrides::Load(flags.quotas_file);
    if (!quotas.ok()) {
      std::fprintf(stderr, "diablo-scheduler: --quotas %s\n",
                   std::string(quotas.status().message()).c_str());
      return 2;
    }
    options.scheduler.quotas = std::move(*quotas);
  }
  if (!flags.metrics_token_file.empty()) {
    std::ifstream in(flags.metrics_token_file);
    std::getline(in, options.metrics_token);
    if (options.metrics_token.empty()) {
      std::fprintf(stderr,
                   "diablo-scheduler: --metrics-token-file %s: no token on its first line\n",
                   flags.metrics_token_file.c_str());
      return 2;
    }
  }
  if (options.submit_checks.object_cache_bytes <= 0 ||
      options.submit_checks.dataset_check_bytes < 0) {
    std::fprintf(stderr,
                 "diablo-scheduler: --submit-cache-bytes must be positive and "
                 "--dataset-check-bytes not negative\n");
    return 2;
  }
  if (options.scheduler.lease_timeout_s <= options.scheduler.heartbeat_interval_s) {
    std::fprintf(stderr,
                 "diablo-scheduler: --lease-timeout must be longer than --heartbeat-interval\n");
    return 2;
  }

  sigset_t signals = BlockShutdownSignals();
  auto server = diablo::SchedulerServer::BuildAndStart(options);
  if (!server.ok()) return Fail(server.status());
  // Tests and scripts read this line to learn the port when --listen asked for 0.
  std::fprintf(stderr, "diablo-scheduler %s listening on port %d\n", diablo::kVersion,
               (*server)->port());
  if ((*server)->metrics_port() != 0)
    std::fprintf(stderr, "diablo-scheduler metrics on port %d\n", (*server)->metrics_port());
  std::fflush(stderr);

  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "diablo-scheduler: received %s, shutting down\n",
               received == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Shutdown(absl::Milliseconds(flags.grace_seconds * 1000));
  (*server)->Wait();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  diablo::SchedulerOptions options;
  ServeFlags flags;
  CLI::App app{
      "diablo-scheduler: the DiaBlo fine-tuning service.\n"
      "Serves the gRPC API (diablo.v1 job, file, worker and fleet services, grpc.health.v1\n"
      "health checking and server reflection) until SIGINT or SIGTERM, then finishes the\n"
      "calls in flight for up to --shutdown-grace seconds.  Jobs, events, workers, files\n"
      "and tokens live in <data-dir>/scheduler.db (SQLite); datasets, checkpoints and\n"
      "adapters in --storage.\n\n"
      "Example:\n"
      "  diablo-scheduler --data-dir /var/lib/diablo token create --tenant ml-team\n"
      "  diablo-scheduler --data-dir /var/lib/diablo token create --tenant ml-team --role worker\n"
      "  diablo-scheduler --data-dir /var/lib/diablo --listen 0.0.0.0:50051 --metrics-listen "
      "0.0.0.0:9464\n"
      "  DIABLO_TOKEN=<user token> diablo-ctl --server 127.0.0.1:50051 version"};
  app.set_version_flag("--version", std::string("diablo-scheduler ") + diablo::kVersion + " (" +
                                        diablo::kGitCommit + ")");
  AddServeOptions(app, options, flags);
  TokenArgs token_args;
  CLI::App* token = AddTokenCommands(app, token_args);
  CLI11_PARSE(app, argc, argv);

  if (options.data_dir.empty()) {
    absl::StatusOr<std::string> state = diablo::DefaultStateDir("scheduler");
    if (!state.ok()) {
      std::fprintf(stderr, "diablo-scheduler: %s; name one with --data-dir or DIABLO_DATA_DIR\n",
                   std::string(state.status().message()).c_str());
      return 2;
    }
    options.data_dir = *state;
  }
  if (token->parsed()) {
    const std::string verb = token->got_subcommand("create")   ? "create"
                             : token->got_subcommand("revoke") ? "revoke"
                                                               : "list";
    return RunToken(options.data_dir, verb, token_args);
  }
  return Serve(options, flags);
}
