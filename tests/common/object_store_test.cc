// Conformance of the ObjectStore backends: the same tests against the file
// store (a temporary directory) and the S3 store (a moto server on loopback
// with its IAM authentication switched on, so moto checks the SigV4
// signature of every request).  Then what only S3 has: addressing, errors,
// multipart parts, pagination.
#include "common/object_store.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "common/file_store.h"
#include "common/s3_http.h"
#include "common/s3_store.h"
#include "common/s3_xml.h"
#include "common/sha256.h"
#include "common/sigv4.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kBucket[] = "diablo-test";
constexpr int64_t kMiB = int64_t{1} << 20;

fs::path MakeTempDir() {
  std::string pattern = (fs::temp_directory_path() / "diablo-object-store-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  return pattern;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xFF);
  return out;
}

void WriteFile(const fs::path& path, std::string_view data) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary)
      .write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::vector<std::string> Keys(const std::vector<ObjectInfo>& objects) {
  std::vector<std::string> keys;
  for (const ObjectInfo& o : objects) keys.push_back(o.key);
  return keys;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

bool Answers(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// One signed request straight through the building blocks, for what the
// store does not expose (IAM setup, an object's ETag).
absl::StatusOr<s3::HttpResponse> RawRequest(const std::string& endpoint, std::string method,
                                            std::string path, sigv4::QueryParams query,
                                            std::string body, std::string content_type,
                                            const sigv4::Credentials& credentials,
                                            std::string_view service) {
  const std::string host = endpoint.substr(endpoint.find("://") + 3);
  sigv4::Headers headers = {{"Host", host}};
  if (!content_type.empty()) headers.emplace_back("Content-Type", content_type);
  const std::string hash = Sha256Hex(body);
  const sigv4::Signature s =
      sigv4::Sign({.method = method,
                   .canonical_uri = path,
                   .query = query,
                   .headers = headers,
                   .payload_sha256 = hash},
                  std::chrono::system_clock::now(), credentials, "us-east-1", service);
  const std::string q = sigv4::CanonicalQueryString(query);
  return s3::PerformHttp({.method = method,
                          .url = endpoint + path + (q.empty() ? "" : "?" + q),
                          .headers = s.headers,
                          .body = body});
}

// A moto server for this process, started on first use and stopped at exit.
// Its IAM holds one user allowed s3:*; after setup moto authenticates every
// request, so a wrong signature fails as it would on AWS.
class Moto {
 public:
  static Moto& Get() {
    if (instance_ == nullptr) instance_ = new Moto();
    return *instance_;
  }
  // At exit; a process that ran no S3 case never started one.
  static void StopIfStarted() {
    if (instance_ != nullptr) instance_->Stop();
  }

  std::string skip_reason;  // no Python or no moto: the S3 cases are skipped
  std::string error;        // moto is there but could not be set up: they fail
  std::string endpoint;
  sigv4::Credentials credentials;

  // What the environment would give a deployment pointed at this server.
  void ExportEnvironment() const {
    ::setenv("AWS_ACCESS_KEY_ID", credentials.access_key_id.c_str(), 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key.c_str(), 1);
    ::unsetenv("AWS_SESSION_TOKEN");
    ::setenv("AWS_REGION", "us-east-1", 1);
    ::setenv("DIABLO_S3_ENDPOINT", endpoint.c_str(), 1);
    ::setenv("DIABLO_S3_PATH_STYLE", "1", 1);
  }
  S3Settings Settings() const {
    S3Settings s;
    s.access_key_id = credentials.access_key_id;
    s.secret_access_key = credentials.secret_access_key;
    s.endpoint = endpoint;
    s.path_style = true;
    return s;
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 50 && ::waitpid(pid_, nullptr, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 private:
  Moto() {
    const std::string python = DIABLO_VENV_PYTHON;
    if (python.empty()) {
      skip_reason =
          "DIABLO_VENV_PYTHON is empty (run scripts/setup.sh); no moto server for the S3 cases";
      return;
    }
    if (!fs::exists(python)) {
      skip_reason =
          absl::StrCat("DIABLO_VENV_PYTHON ", python, " does not exist (run scripts/setup.sh)");
      return;
    }
    // find_spec, not an import: importing moto.server takes most of a second.
    const std::string probe =
        python +
        " -c 'import importlib.util as u, sys; "
        "sys.exit(u.find_spec(\"moto\") is None or u.find_spec(\"flask\") is None)'";
    if (std::system(probe.c_str()) != 0) {
      skip_reason = absl::StrCat("moto's server is not installed in ", python,
                                 " (pip install 'moto[server]')");
      return;
    }
    dir_ = MakeTempDir();
    const int port = FreePort();
    endpoint = absl::StrCat("http://127.0.0.1:", port);
    const std::string log = (dir_ / "moto.log").string();
    const std::string port_text = std::to_string(port);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // no orphan server if the test dies
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execl(python.c_str(), python.c_str(), "-m", "moto.server", "-H", "127.0.0.1", "-p",
              port_text.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!Answers(port)) {
      if (::waitpid(pid_, nullptr, WNOHANG) != 0 || std::chrono::steady_clock::now() > deadline) {
        error = absl::StrCat("moto did not start on port ", port, ":\n", Tail(log));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (absl::Status s = SetUpIam(); !s.ok())
      error = absl::StrCat("moto IAM setup: ", s.ToString(), "\nmoto's log:\n", Tail(log));
  }

  // The end of moto's log, for failure messages (the log goes with dir_).
  static std::string Tail(const std::string& path) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.size() > 3000 ? text.substr(text.size() - 3000) : text;
  }

  absl::StatusOr<std::string> Iam(const std::vector<std::pair<std::string, std::string>>& params) {
    std::string form = "Version=2010-05-08";
    for (const auto& [name, value] : params)
      absl::StrAppend(&form, "&", name, "=", sigv4::UriEncode(value, false));
    // Before authentication is switched on moto takes any key.
    auto r = RawRequest(endpoint, "POST", "/", {}, form, "application/x-www-form-urlencoded",
                        {"setup", "setup", ""}, "iam");
    if (!r.ok()) return r.status();
    if (r->status != 200)
      return absl::InternalError(absl::StrCat("IAM answered ", r->status, ": ", r->body));
    return r->body;
  }

  absl::Status SetUpIam() {
    auto user = Iam({{"Action", "CreateUser"}, {"UserName", "diablo"}});
    if (!user.ok()) return user.status();
    auto key = Iam({{"Action", "CreateAccessKey"}, {"UserName", "diablo"}});
    if (!key.ok()) return key.status();
    credentials.access_key_id = s3::XmlText(*key, "AccessKeyId").value_or("");
    credentials.secret_access_key = s3::XmlText(*key, "SecretAccessKey").value_or("");
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty())
      return absl::InternalError("CreateAccessKey returned no key: " + *key);
    auto policy = Iam(
        {{"Action", "PutUserPolicy"},
         {"UserName", "diablo"},
         {"PolicyName", "s3"},
         {"PolicyDocument",
          R"({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]})"}});
    if (!policy.ok()) return policy.status();
    // From now on every request is authenticated.
    auto on = s3::PerformHttp({.method = "POST",
                               .url = endpoint + "/moto-api/reset-auth",
                               .headers = {{"Content-Type", "text/plain"}},
                               .body = "0"});
    if (!on.ok()) return on.status();
    if (on->status != 200) return absl::InternalError("reset-auth answered " + on->body);
    return CreateS3Bucket(absl::StrCat("s3://", kBucket), Settings());
  }

 private:
  static inline Moto* instance_ = nullptr;
  pid_t pid_ = -1;
  fs::path dir_;
};

class StopMoto : public ::testing::Environment {
 public:
  void TearDown() override { Moto::StopIfStarted(); }
};
[[maybe_unused]] ::testing::Environment* const kStopMoto =
    ::testing::AddGlobalTestEnvironment(new StopMoto);

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

struct FileBackend {
  static constexpr bool kS3 = false;
  static absl::StatusOr<std::unique_ptr<ObjectStore>> Open(const fs::path& work,
                                                           bool /*small_parts*/) {
    return OpenFileStore(work / "store");
  }
};

struct S3Backend {
  static constexpr bool kS3 = true;
  // Each test gets its own prefix; listing pages of 4 keys make every List
  // below go through continuation tokens.  `small_parts` sets 5 MiB
  // multipart threshold and parts through the environment.
  static absl::StatusOr<std::unique_ptr<ObjectStore>> Open(const fs::path&, bool small_parts) {
    Moto::Get().ExportEnvironment();
    if (small_parts) {
      ::setenv("DIABLO_S3_MULTIPART_THRESHOLD_BYTES", std::to_string(5 * kMiB).c_str(), 1);
      ::setenv("DIABLO_S3_PART_BYTES", std::to_string(5 * kMiB).c_str(), 1);
    }
    absl::StatusOr<S3Settings> settings = S3SettingsFromEnvironment();
    ::unsetenv("DIABLO_S3_MULTIPART_THRESHOLD_BYTES");
    ::unsetenv("DIABLO_S3_PART_BYTES");
    if (!settings.ok()) return settings.status();
    settings->list_page_keys = 4;
    return OpenS3Store(absl::StrCat("s3://", kBucket, "/", TestName()), *settings);
  }
};

class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kS3 ? "S3" : "File";
  }
};

template <typename Backend>
class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (Backend::kS3) {
      if (!Moto::Get().skip_reason.empty()) GTEST_SKIP() << Moto::Get().skip_reason;
      ASSERT_EQ(Moto::Get().error, "");
    }
    work_ = MakeTempDir();
    Open(false);
  }
  void TearDown() override {
    std::error_code ec;
    if (!work_.empty()) fs::remove_all(work_, ec);
  }
  void Open(bool small_parts) {
    auto store = Backend::Open(work_, small_parts);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  ObjectStore& store() { return *store_; }

  fs::path work_;
  std::unique_ptr<ObjectStore> store_;
};

using Backends = ::testing::Types<FileBackend, S3Backend>;
TYPED_TEST_SUITE(ObjectStoreTest, Backends, BackendNames);

TYPED_TEST(ObjectStoreTest, BytesRoundTrip) {
  const std::string data = RandomBytes(100000, 1);  // every byte value, NULs included
  ASSERT_TRUE(this->store().PutBytes("jobs/j-1/data.bin", data).ok());
  auto got = this->store().GetBytes("jobs/j-1/data.bin");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Sha256Hex(*got), Sha256Hex(data));
  auto info = this->store().Stat("jobs/j-1/data.bin");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->key, "jobs/j-1/data.bin");
  EXPECT_EQ(info->size_bytes, 100000);
}

TYPED_TEST(ObjectStoreTest, EmptyObject) {
  ASSERT_TRUE(this->store().PutBytes("empty", "").ok());
  auto got = this->store().GetBytes("empty");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "");
  EXPECT_EQ(this->store().Stat("empty")->size_bytes, 0);
}

TYPED_TEST(ObjectStoreTest, KeysThatNeedEncoding) {
  // Spaces, reserved characters and UTF-8 travel percent-encoded in the path.
  const std::vector<std::string> keys = {"d/a b+c=d&e$f.txt", "d/caf\xC3\xA9 (1)!.json",
                                         "d/x~y_z-1.2"};
  for (const std::string& key : keys) ASSERT_TRUE(this->store().PutBytes(key, key).ok()) << key;
  for (const std::string& key : keys)
    EXPECT_EQ(this->store().GetBytes(key).value_or("<error>"), key);
  auto listed = this->store().List("d/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(Keys(*listed),
              ElementsAre("d/a b+c=d&e$f.txt", "d/caf\xC3\xA9 (1)!.json", "d/x~y_z-1.2"));
}

TYPED_TEST(ObjectStoreTest, FileRoundTrip) {
  const fs::path source = this->work_ / "in" / "weights.bin";
  WriteFile(source, RandomBytes(3 * kMiB + 17, 2));
  ASSERT_TRUE(this->store().PutFile("models/m/weights.bin", source).ok());
  const fs::path target = this->work_ / "out" / "nested" / "weights.bin";
  ASSERT_TRUE(this->store().GetFile("models/m/weights.bin", target).ok());
  EXPECT_EQ(Sha256OfFile(target).value(), Sha256OfFile(source).value());
  // Nothing but the file itself is left in the target directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(target.parent_path()), fs::directory_iterator()),
            1);
}

TYPED_TEST(ObjectStoreTest, OverwriteReplaces) {
  ASSERT_TRUE(this->store().PutBytes("k", "first version").ok());
  ASSERT_TRUE(this->store().PutBytes("k", "second").ok());
  EXPECT_EQ(this->store().GetBytes("k").value_or(""), "second");
  EXPECT_EQ(this->store().Stat("k")->size_bytes, 6);
  const fs::path source = this->work_ / "third";
  WriteFile(source, "third, from a file");
  ASSERT_TRUE(this->store().PutFile("k", source).ok());
  EXPECT_EQ(this->store().GetBytes("k").value_or(""), "third, from a file");
}

TYPED_TEST(ObjectStoreTest, MissingObjectIsNotFound) {
  EXPECT_EQ(this->store().GetBytes("no/such").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(this->store().Stat("no/such").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(this->store().ReadRange("no/such", 0, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(this->store().ReadRange("no/such", 0, 0).status().code(), absl::StatusCode::kNotFound);
  // A failed download leaves an existing local file alone and no temporary.
  const fs::path target = this->work_ / "dl" / "keep.txt";
  WriteFile(target, "old content");
  absl::Status status = this->store().GetFile("no/such", target);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("no/such"));
  std::ifstream in(target);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "old content");
  EXPECT_EQ(std::distance(fs::directory_iterator(target.parent_path()), fs::directory_iterator()),
            1);
}

TYPED_TEST(ObjectStoreTest, PutFileOfMissingLocalFile) {
  EXPECT_EQ(this->store().PutFile("k", this->work_ / "absent").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(this->store().Stat("k").status().code(), absl::StatusCode::kNotFound);
}

TYPED_TEST(ObjectStoreTest, ReadRange) {
  const std::string data = "0123456789abcdefghij";
  ASSERT_TRUE(this->store().PutBytes("r", data).ok());
  EXPECT_EQ(this->store().ReadRange("r", 0, 5).value_or("<error>"), "01234");
  EXPECT_EQ(this->store().ReadRange("r", 10, 3).value_or("<error>"), "abc");
  EXPECT_EQ(this->store().ReadRange("r", 15, 100).value_or("<error>"),
            "fghij");                                                      // fewer at the end
  EXPECT_EQ(this->store().ReadRange("r", 20, 5).value_or("<error>"), "");  // at the end
  EXPECT_EQ(this->store().ReadRange("r", 3, 0).value_or("<error>"), "");
}

TYPED_TEST(ObjectStoreTest, ListByPrefixSorted) {
  for (const char* key : {"b/5", "a/2", "ab/4", "a/sub/3", "a/1", "c"})
    ASSERT_TRUE(this->store().PutBytes(key, key).ok()) << key;
  auto in_a = this->store().List("a/");
  ASSERT_TRUE(in_a.ok()) << in_a.status();
  EXPECT_THAT(Keys(*in_a), ElementsAre("a/1", "a/2", "a/sub/3"));
  EXPECT_EQ((*in_a)[2].size_bytes, 7);
  EXPECT_THAT(Keys(this->store().List("a").value()), ElementsAre("a/1", "a/2", "a/sub/3", "ab/4"));
  EXPECT_THAT(Keys(this->store().List("").value()),
              ElementsAre("a/1", "a/2", "a/sub/3", "ab/4", "b/5", "c"));
  EXPECT_TRUE(this->store().List("zzz/").value().empty());
}

TYPED_TEST(ObjectStoreTest, ListManyKeys) {
  // 4-key pages for S3: 10 round trips with continuation tokens.
  std::vector<std::string> expected;
  for (int i = 0; i < 37; ++i) {
    expected.push_back(absl::StrCat("many/", i < 10 ? "0" : "", i));
    ASSERT_TRUE(this->store().PutBytes(expected.back(), "x").ok());
  }
  ASSERT_TRUE(this->store().PutBytes("other", "x").ok());
  auto listed = this->store().List("many/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(Keys(*listed), expected);
}

TYPED_TEST(ObjectStoreTest, Delete) {
  ASSERT_TRUE(this->store().PutBytes("d/x", "x").ok());
  ASSERT_TRUE(this->store().Delete("d/x").ok());
  EXPECT_EQ(this->store().Stat("d/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(this->store().List("d/").value().empty());
  EXPECT_TRUE(this->store().Delete("d/x").ok());  // absent: not an error
}

TYPED_TEST(ObjectStoreTest, LargeFileInParts) {
  // For S3 a 5 MiB threshold and part size (from the environment): three
  // parts of 5, 5 and 2 MiB.
  this->Open(/*small_parts=*/true);
  const fs::path source = this->work_ / "big.bin";
  WriteFile(source, RandomBytes(12 * kMiB + 5, 3));
  ASSERT_TRUE(this->store().PutFile("ckpt/big.bin", source).ok());
  EXPECT_EQ(this->store().Stat("ckpt/big.bin")->size_bytes, 12 * kMiB + 5);
  const fs::path target = this->work_ / "big.out";
  ASSERT_TRUE(this->store().GetFile("ckpt/big.bin", target).ok());
  EXPECT_EQ(Sha256OfFile(target).value(), Sha256OfFile(source).value());
  EXPECT_EQ(this->store().ReadRange("ckpt/big.bin", 5 * kMiB - 2, 4).value_or(""),
            RandomBytes(12 * kMiB + 5, 3).substr(5 * kMiB - 2, 4));
  if constexpr (TypeParam::kS3) {
    // A multipart object's ETag ends in "-<parts>".
    const Moto& moto = Moto::Get();
    auto head = RawRequest(moto.endpoint, "HEAD",
                           absl::StrCat("/", kBucket, "/", TestName(), "/ckpt/big.bin"), {}, "", "",
                           moto.credentials, "s3");
    ASSERT_TRUE(head.ok()) << head.status();
    EXPECT_THAT(head->headers["etag"], ::testing::EndsWith("-3\""));
  }
}

TYPED_TEST(ObjectStoreTest, DirectoryRoundTrip) {
  const fs::path source = this->work_ / "adapter";
  WriteFile(source / "adapter_config.json", R"({"r": 8})");
  WriteFile(source / "weights" / "a.safetensors", RandomBytes(200000, 4));
  WriteFile(source / "weights" / "deep" / "b.bin", RandomBytes(10, 5));
  ASSERT_TRUE(PutDirectory(this->store(), "jobs/j-2/adapter", source).ok());
  EXPECT_THAT(
      Keys(this->store().List("jobs/j-2/").value()),
      ElementsAre("jobs/j-2/adapter/adapter_config.json", "jobs/j-2/adapter/weights/a.safetensors",
                  "jobs/j-2/adapter/weights/deep/b.bin"));
  const fs::path target = this->work_ / "restored";
  ASSERT_TRUE(GetDirectory(this->store(), "jobs/j-2/adapter", target).ok());
  for (const char* file : {"adapter_config.json", "weights/a.safetensors", "weights/deep/b.bin"})
    EXPECT_EQ(Sha256OfFile(target / file).value(), Sha256OfFile(source / file).value()) << file;
  EXPECT_EQ(GetDirectory(this->store(), "jobs/none", this->work_ / "none").code(),
            absl::StatusCode::kNotFound);
}

TYPED_TEST(ObjectStoreTest, RejectsKeysThatEscape) {
  for (const char* key : {"../x", "a/../../x", "/abs", "a//b", "a/./b", ""}) {
    EXPECT_EQ(this->store().PutBytes(key, "x").code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(this->store().GetBytes(key).status().code(), absl::StatusCode::kInvalidArgument)
        << key;
    EXPECT_EQ(this->store().Stat(key).status().code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(this->store().Delete(key).code(), absl::StatusCode::kInvalidArgument) << key;
  }
}

TYPED_TEST(ObjectStoreTest, ConcurrentCallers) {
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5 && results[t].ok(); ++i) {
        const std::string key = absl::StrCat("c/", t, "/", i);
        const std::string data = RandomBytes(1000 + i, static_cast<uint32_t>(t * 10 + i));
        results[t] = this->store().PutBytes(key, data);
        if (results[t].ok() && this->store().GetBytes(key).value_or("") != data)
          results[t] = absl::DataLossError(key + " came back different");
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(this->store().List("c/").value().size(), 20u);
}

// ---- S3 only ----------------------------------------------------------------

class S3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Moto::Get().skip_reason.empty()) GTEST_SKIP() << Moto::Get().skip_reason;
    ASSERT_EQ(Moto::Get().error, "");
  }
};

TEST(S3StoreWithoutServer, MissingCredentialsNameTheVariables) {
  ::unsetenv("AWS_ACCESS_KEY_ID");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  auto store = OpenObjectStore("s3://bucket/prefix");
  ASSERT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition) << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("AWS_ACCESS_KEY_ID"));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("AWS_SECRET_ACCESS_KEY"));
}

TEST(S3StoreWithoutServer, MalformedSettingsAndUris) {
  S3Settings settings;
  settings.access_key_id = "id";
  settings.secret_access_key = "secret";
  EXPECT_EQ(OpenS3Store("s3://", settings).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenS3Store("s3:///prefix", settings).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenS3Store("s3://bucket/../x", settings).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenS3Store("s3://bucket/a/b/", settings).value()->uri(), "s3://bucket/a/b");
  S3Settings small = settings;
  small.part_bytes = 1 * kMiB;  // below S3's 5 MiB minimum
  EXPECT_EQ(OpenS3Store("s3://bucket", small).status().code(), absl::StatusCode::kInvalidArgument);
  S3Settings endpoint = settings;
  endpoint.endpoint = "127.0.0.1:9000";  // no scheme
  EXPECT_EQ(OpenS3Store("s3://bucket", endpoint).status().code(),
            absl::StatusCode::kInvalidArgument);
  ::setenv("DIABLO_S3_PART_BYTES", "16M", 1);
  EXPECT_EQ(S3SettingsFromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
  ::unsetenv("DIABLO_S3_PART_BYTES");
  ::setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
  ::unsetenv("AWS_REGION");
  EXPECT_EQ(S3SettingsFromEnvironment()->region, "eu-west-3");
  ::unsetenv("AWS_DEFAULT_REGION");
}

TEST(S3StoreRetries, UnreachableEndpointIsUnavailable) {
  S3Settings settings;
  settings.access_key_id = "id";
  settings.secret_access_key = "secret";
  const int port = FreePort();  // nothing listens there
  settings.endpoint = absl::StrCat("http://127.0.0.1:", port);
  settings.max_retries = 1;
  auto store = OpenS3Store("s3://bucket/p", settings);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::Status status = (*store)->Stat("k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  EXPECT_THAT(std::string(status.message()), HasSubstr("s3://bucket/p/k"));
}

// A scripted HTTP server on loopback: each connection gets the next canned
// answer; the request heads are recorded.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::vector<std::string> answers) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 8) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      std::abort();
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, answers = std::move(answers)] {
      for (const std::string& answer : answers) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        // Read the head and the whole body before answering, so the client
        // sees the answer and not a reset connection.
        std::string request;
        char buffer[65536];
        size_t head_end = std::string::npos;
        size_t body_length = 0;
        while (head_end == std::string::npos || request.size() < head_end + 4 + body_length) {
          const ssize_t n = ::read(c, buffer, sizeof(buffer));
          if (n <= 0) break;
          request.append(buffer, static_cast<size_t>(n));
          if (head_end == std::string::npos &&
              (head_end = request.find("\r\n\r\n")) != std::string::npos) {
            const size_t at =
                absl::AsciiStrToLower(request.substr(0, head_end)).find("content-length:");
            if (at != std::string::npos) body_length = std::stoul(request.substr(at + 15));
          }
        }
        requests_.push_back(request);
        (void)!::write(c, answer.data(), answer.size());
        ::close(c);
      }
    });
  }
  ~ScriptedServer() { Finish(); }
  // Stops the server; the requests it received, whole.
  const std::vector<std::string>& Finish() {
    if (fd_ >= 0) {
      ::shutdown(fd_, SHUT_RDWR);  // wakes a pending accept
      thread_.join();
      ::close(fd_);
      fd_ = -1;
    }
    return requests_;
  }
  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

  static std::string Answer(int status, std::string_view body, std::string_view headers = "") {
    return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Length: ", body.size(),
                        "\r\nConnection: close\r\n", AbslView(headers), "\r\n", AbslView(body));
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<std::string> requests_;
};

S3Settings OfflineSettings(const std::string& endpoint) {
  S3Settings settings;
  settings.access_key_id = "id";
  settings.secret_access_key = "secret";
  settings.endpoint = endpoint;
  return settings;
}

const std::string kSlowDown =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

TEST(S3StoreRetries, SlowDownIsRetriedWithTheBodyResent) {
  std::vector<std::string> answers = {ScriptedServer::Answer(503, kSlowDown),
                                      ScriptedServer::Answer(500, ""),
                                      ScriptedServer::Answer(200, "")};
  ScriptedServer server(answers);
  auto store = OpenS3Store("s3://bucket/p", OfflineSettings(server.endpoint()));
  ASSERT_TRUE(store.ok()) << store.status();
  absl::Status status = (*store)->PutBytes("k", "payload");
  EXPECT_TRUE(status.ok()) << status;
  const std::vector<std::string>& requests = server.Finish();
  ASSERT_EQ(requests.size(), 3u);
  for (const std::string& request : requests) {
    EXPECT_THAT(request, ::testing::StartsWith("PUT /bucket/p/k HTTP/1.1\r\n"));
    EXPECT_THAT(request, HasSubstr("Authorization: AWS4-HMAC-SHA256 Credential=id/"));
    EXPECT_THAT(request, ::testing::EndsWith("\r\n\r\npayload"));
  }
}

TEST(S3StoreRetries, GivesUpAfterThreeRetries) {
  std::vector<std::string> answers(5, ScriptedServer::Answer(503, kSlowDown));
  ScriptedServer server(answers);
  auto store = OpenS3Store("s3://bucket/p", OfflineSettings(server.endpoint()));
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::string> got = (*store)->GetBytes("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("SlowDown"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("s3://bucket/p/k"));
  EXPECT_EQ(server.Finish().size(), 4u);  // the first try and three more
}

TEST(S3StoreRetries, FailedMultipartUploadIsAborted) {
  const fs::path dir = MakeTempDir();
  WriteFile(dir / "big", RandomBytes(11 * kMiB, 6));
  ScriptedServer server({
      ScriptedServer::Answer(200,
                             "<InitiateMultipartUploadResult><UploadId>up/1</UploadId>"
                             "</InitiateMultipartUploadResult>"),
      ScriptedServer::Answer(200, "", "ETag: \"e1\"\r\n"),
      ScriptedServer::Answer(400, "<Error><Code>InvalidPart</Code><Message>no</Message></Error>"),
      ScriptedServer::Answer(204, ""),
  });
  S3Settings settings = OfflineSettings(server.endpoint());
  settings.multipart_threshold_bytes = 5 * kMiB;
  settings.part_bytes = 5 * kMiB;
  absl::Status status = OpenS3Store("s3://bucket/p", settings).value()->PutFile("k", dir / "big");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("InvalidPart"));
  const std::vector<std::string>& requests = server.Finish();
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_THAT(requests[0], ::testing::StartsWith("POST /bucket/p/k?uploads= HTTP/1.1"));
  EXPECT_THAT(requests[1],
              ::testing::StartsWith("PUT /bucket/p/k?partNumber=1&uploadId=up%2F1 HTTP/1.1"));
  EXPECT_THAT(requests[2],
              ::testing::StartsWith("PUT /bucket/p/k?partNumber=2&uploadId=up%2F1 HTTP/1.1"));
  EXPECT_THAT(requests[3], ::testing::StartsWith("DELETE /bucket/p/k?uploadId=up%2F1 HTTP/1.1"));
  fs::remove_all(dir);
}

TEST(S3StoreRetries, ClientErrorsAreNotRetried) {
  ScriptedServer server({ScriptedServer::Answer(
      400, "<Error><Code>InvalidRequest</Code><Message>bad &amp; wrong</Message></Error>")});
  absl::Status status =
      OpenS3Store("s3://bucket/p", OfflineSettings(server.endpoint())).value()->Delete("k");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("InvalidRequest: bad & wrong"));
  EXPECT_EQ(server.Finish().size(), 1u);
}

TEST_F(S3StoreTest, OpensFromTheEnvironment) {
  Moto::Get().ExportEnvironment();
  auto store = OpenObjectStore(absl::StrCat("s3://", kBucket, "/env"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->PutBytes("hello.txt", "hello").ok());
  EXPECT_EQ((*store)->GetBytes("hello.txt").value_or(""), "hello");
}

TEST_F(S3StoreTest, WrongCredentialsArePermissionDenied) {
  S3Settings wrong_secret = Moto::Get().Settings();
  wrong_secret.secret_access_key = "not-the-secret";
  auto store = OpenS3Store(absl::StrCat("s3://", kBucket, "/denied"), wrong_secret);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::Status status = (*store)->PutBytes("k", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("SignatureDoesNotMatch"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("s3://diablo-test/denied/k"));

  S3Settings unknown_key = Moto::Get().Settings();
  unknown_key.access_key_id = "AKIAUNKNOWNKEY000000";
  status = OpenS3Store(absl::StrCat("s3://", kBucket, "/denied"), unknown_key)
               .value()
               ->GetBytes("k")
               .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("InvalidAccessKeyId"));
}

TEST_F(S3StoreTest, MissingBucketIsNotFound) {
  auto store = OpenS3Store("s3://no-such-bucket/p", Moto::Get().Settings());
  ASSERT_TRUE(store.ok()) << store.status();
  absl::Status status = (*store)->PutBytes("k", "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("NoSuchBucket"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("s3://no-such-bucket/p/k"));
  // Deleting from a bucket that is not there is a mistake, not a no-op.
  EXPECT_EQ((*store)->Delete("k").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->List("").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(S3StoreTest, StoreAtTheBucketRoot) {
  ASSERT_TRUE(CreateS3Bucket("s3://diablo-root", Moto::Get().Settings()).ok());
  ASSERT_TRUE(
      CreateS3Bucket("s3://diablo-root", Moto::Get().Settings()).ok());  // already ours: fine
  auto store = OpenS3Store("s3://diablo-root", Moto::Get().Settings());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->uri(), "s3://diablo-root");
  ASSERT_TRUE((*store)->PutBytes("top", "1").ok());
  ASSERT_TRUE((*store)->PutBytes("dir/inner", "22").ok());
  EXPECT_THAT(Keys((*store)->List("").value()), ElementsAre("dir/inner", "top"));
  // A prefixed store of the same bucket sees only its part.
  EXPECT_THAT(
      Keys(OpenS3Store("s3://diablo-root/dir", Moto::Get().Settings()).value()->List("").value()),
      ElementsAre("inner"));
}

}  // namespace
}  // namespace diablo
