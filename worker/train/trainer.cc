// The training loop.  Each step: this rank's micro-batches forward and
// backward (the LM head and cross-entropy only where labels exist), one
// all-reduce of every trainable gradient plus the loss, clipping, AdamW.
// The loss is normalised by the label tokens of the whole global batch, which
// every rank knows from the batch plan, so N ranks compute exactly the sum
// one rank would.  The same all-reduce carries each rank's stop request, so
// a signal to any rank stops every rank after the same step.
#include "worker/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <stdexcept>

#include "formats/gguf.h"  // FormatError
#include "formats/safetensors.h"
#include "text/chat_template.h"
#include "text/dataset.h"
#include "worker/model/load_model.h"
#include "worker/model/packed_embedding.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/inject.h"
#include "worker/train/batch_plan.h"
#include "worker/train/checkpoint.h"
#include "worker/train/checkpoint_share.h"
#include "worker/train/collective.h"
#include "worker/train/loss.h"
#include "worker/train/lr_schedule.h"
#include "worker/train/memory_advice.h"

namespace diablo::train {
namespace fs = std::filesystem;
namespace {

std::atomic<bool> g_stop_requested{false};
extern "C" void RequestStop(int) { g_stop_requested = true; }

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

at::ScalarType WeightDtype(Precision precision) {
  switch (precision) {
    case Precision::kBf16:
      return at::kBFloat16;
    case Precision::kFp16:
      return at::kHalf;
    case Precision::kFp32:
      break;
  }
  return at::kFloat;
}

at::Device ResolveDevice(const std::string& wanted, const DistributedEnv& env) {
  const bool cuda = torch::cuda::is_available();
  if (wanted == "cuda" && !cuda)
    throw std::invalid_argument(
        "device: cuda was asked for, but no CUDA device is visible (use device: cpu)");
  if (wanted == "cpu" || !cuda) return at::Device(at::kCPU);
  return at::Device(at::kCUDA,
                    static_cast<c10::DeviceIndex>(env.local_rank % torch::cuda::device_count()));
}

class Run {
 public:
  Run(const TrainConfig& config, const RunOptions& options, EventSink& sink)
      : config_(config), options_(options), sink_(sink) {}

  int Execute();
  // Ranks of the run (1 until the group is joined).
  int world_size() const { return collective_ ? collective_->world_size() : env_.world_size; }

 private:
  // Setup, top to bottom.
  void Setup();
  void LoadModelAndData();
  void MakeTrainable();
  void PlanBatches();
  std::string ChooseCheckpoint() const;
  void ResumeIfAsked();
  // One optimiser step, top to bottom.
  void Step(int64_t step);
  double SetLearningRate(int64_t step);
  double ComputeGradients(int64_t step, double labels);
  bool ApplyUpdate(int64_t step, double* grad_norm);
  void ReportStep(double loss, double lr, double grad_norm, int64_t tokens, double seconds,
                  bool skipped);
  // Around the loop.
  void WriteRunConfig();
  void ReportStarted();
  void ReportFinished(double eval_loss);
  double Evaluate();
  void Save(bool final_save);
  void WriteOutputs();
  nlohmann::json Error(events::ErrorCode code, const std::string& message) const {
    nlohmann::json event = MakeErrorEvent(code, message);
    event[events::field::kStep] = state_.step;
    return event;
  }
  bool rank0() const { return collective_->rank() == 0; }
  // One rank stops at once; several stop at the step all of them agreed on.
  bool StopRequested() const {
    return collective_->world_size() == 1 ? g_stop_requested.load() : stop_agreed_;
  }

  const TrainConfig& config_;
  const RunOptions& options_;
  EventSink& sink_;

  DistributedEnv env_;
  std::unique_ptr<Collective> collective_;
  at::Device device_{at::kCPU};
  model::LoadedModel loaded_;
  int32_t pad_id_ = 0;
  Dataset train_, eval_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<BatchPlan> plan_;
  TrainerState state_;
  std::string resumed_from_;
  int64_t start_step_ = 0;
  double last_loss_ = NAN;
  int64_t tokens_trained_ = 0;
  Clock::time_point started_;
  double train_seconds_ = 0;
  std::string last_checkpoint_;
  bool stop_agreed_ = false;  // some rank asked to stop, as of the last all-reduce
};

void Run::Setup() {
  env_ = DistributedEnvFromEnvironment();
  device_ = ResolveDevice(config_.device, env_);
  // Bind this rank's GPU before anything is allocated, so that no context,
  // workspace or NCCL communicator lands on device 0 by default.
  if (device_.is_cuda()) c10::impl::VirtualGuardImpl(device_.type()).setDevice(device_);
  if (config_.threads > 0) at::set_num_threads(static_cast<int>(config_.threads));
  if (config_.method.name == TrainMethod::kFull && config_.precision != Precision::kFp32)
    throw std::invalid_argument("method full trains every weight in fp32: set precision: fp32");
  LoadModelAndData();
  MakeTrainable();
  PlanBatches();
  ResumeIfAsked();
}

void Run::LoadModelAndData() {
  const bool packed = config_.base_weights == BaseWeights::kPacked;
  loaded_ = model::LoadModel(config_.model,
                             {.dtype = WeightDtype(config_.precision), .keep_quantized = packed});
  std::unique_ptr<model::Tokenizer> tokenizer = model::LoadTokenizer(config_.model);
  pad_id_ = tokenizer->eos_id().value_or(0);
  model::ChatTemplate chat =
      config_.data.chat_template == "auto"
          ? model::ChatTemplate::ForModel(config_.model, *tokenizer)
          : model::ChatTemplate::FromName(config_.data.chat_template,
                                          model::TemplateTokensOf(*tokenizer));
  train_ = LoadDataset(config_.data.train, config_.data, *tokenizer, chat);
  if (!config_.data.eval.empty())
    eval_ = LoadDataset(config_.data.eval, config_.data, *tokenizer, chat);
}

// Adapters injected (or every weight unfrozen), the model on its device, and
// the optimiser over what trains.
void Run::MakeTrainable() {
  auto& model = *loaded_.model;
  // The same seed on every rank: LoRA's random init must agree everywhere.
  at::manual_seed(config_.optim.seed);
  if (config_.method.name == TrainMethod::kFull) {
    for (auto& p : model.parameters()) p.set_requires_grad(true);
  } else {
    peft::InjectAdapters(model, ToAdapterConfig(config_));
    if (!config_.init_adapter.empty()) peft::LoadAdapterWeights(model, config_.init_adapter);
  }
  model.to(device_);
  model.set_gradient_checkpointing(config_.gradient_checkpointing);
  model.train();
  for (auto& [name, p] : TrainedParameters(model)) params_.push_back(p);

  const OptimConfig& o = config_.optim;
  optimizer_ = std::make_unique<torch::optim::AdamW>(params_, torch::optim::AdamWOptions(o.lr)
                                                                  .betas({o.beta1, o.beta2})
                                                                  .eps(o.eps)
                                                                  .weight_decay(o.weight_decay));
}

// Joins the ranks and splits the data between them.
void Run::PlanBatches() {
  const OptimConfig& o = config_.optim;
  // More ranks on this machine than GPUs: they share devices (ResolveDevice).
  const bool shared_device =
      device_.is_cuda() && env_.local_world_size > static_cast<int>(torch::cuda::device_count());
  collective_ = JoinGroup(env_, device_, config_.collective_backend, shared_device,
                          std::chrono::seconds(config_.collective_timeout_s));
  const int world = collective_->world_size();
  int64_t micro = o.micro_batch;
  if (micro == 0 && o.gradient_accumulation > 0) {
    const int64_t per_rank = (o.global_batch + world - 1) / world;
    micro = (per_rank + o.gradient_accumulation - 1) / o.gradient_accumulation;
  }
  plan_ =
      std::make_unique<BatchPlan>(static_cast<int64_t>(train_.examples.size()), o.global_batch,
                                  micro, o.epochs, o.max_steps, o.seed, world, collective_->rank());
  state_.world_size = world;
  state_.loss_scale = config_.precision == Precision::kFp16 ? 65536.0 : 1.0;
}

// Rank 0's choice of checkpoint (the others follow it).
std::string Run::ChooseCheckpoint() const {
  if (!options_.resume_from.empty()) return options_.resume_from;
  std::string latest = LatestCheckpoint(config_.output_dir);
  if (latest.empty())
    throw std::invalid_argument("--resume: no checkpoint in " + CheckpointsDir(config_.output_dir) +
                                " (start without --resume)");
  return latest;
}

void Run::ResumeIfAsked() {
  std::string resume;
  if (options_.resume || !options_.resume_from.empty()) {
    std::string error;
    if (rank0()) {
      try {
        resume = ChooseCheckpoint();
      } catch (const std::invalid_argument& e) {
        error = e.what();
      }
    }
    if (collective_->world_size() > 1) {
      resume = ShareCheckpoint(*collective_, resume, error, config_.output_dir, device_);
    } else if (!error.empty()) {
      throw std::invalid_argument(error);
    }
  }
  if (!resume.empty()) {
    const int world = state_.world_size;
    state_ = LoadCheckpoint(resume, config_, *loaded_.model, *optimizer_, device_);
    if (state_.world_size != world)
      throw std::invalid_argument(
          resume + ": written by a run with " + std::to_string(state_.world_size) +
          " ranks; resume with the same number (the global batch is split by rank)");
    resumed_from_ = resume;
  }
  start_step_ = state_.step;
}

void Run::Step(int64_t step) {
  const double lr = SetLearningRate(step);
  const std::vector<int64_t> global = plan_->GlobalBatch(step);
  const double labels = static_cast<double>(SumLabels(train_, global));
  const int64_t tokens = SumTokens(train_, global);

  auto start = Clock::now();
  const double loss = ComputeGradients(step, labels);
  double grad_norm = 0;
  const bool skipped = !ApplyUpdate(step, &grad_norm);
  const double seconds = Seconds(Clock::now() - start);
  train_seconds_ += seconds;
  tokens_trained_ += tokens;
  state_.step = step + 1;
  state_.epoch = plan_->EpochOf(step);
  last_loss_ = loss;
  ReportStep(loss, lr, grad_norm, tokens, seconds, skipped);
}

double Run::SetLearningRate(int64_t step) {
  const double lr = LearningRate(config_.optim, step, plan_->total_steps());
  for (auto& group : optimizer_->param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  return lr;
}

// Forward and backward over the step's micro-batches, then one all-reduce of
// the gradients and the loss; returns the mean loss over the step's labels
// (all ranks).  Gradients stay multiplied by the loss scale.
double Run::ComputeGradients(int64_t step, double labels) {
  auto& model = *loaded_.model;
  // Dropout draws from a generator seeded by (seed, rank, step): resuming
  // needs no RNG state and every rank's stream is its own.
  at::manual_seed(config_.optim.seed * 1000003ull +
                  static_cast<uint64_t>(collective_->rank()) * 7919ull +
                  static_cast<uint64_t>(step));
  optimizer_->zero_grad();
  double local_loss = 0;
  for (const auto& indices : plan_->MicroBatches(step)) {
    MicroBatch batch = Collate(train_, indices, pad_id_, device_);
    at::Tensor loss_sum = LossSum(model, batch);
    local_loss += loss_sum.item<double>();
    (loss_sum * (state_.loss_scale / labels)).backward();
  }
  std::vector<at::Tensor> bucket;
  for (auto& p : params_) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    bucket.push_back(p.grad());
  }
  // The loss and this rank's stop request ride the gradients' all-reduce.
  at::Tensor tail = at::tensor({local_loss, g_stop_requested ? 1.0 : 0.0},
                               at::TensorOptions().dtype(params_[0].scalar_type()))
                        .to(device_);
  bucket.push_back(tail);
  collective_->AllReduceSum(bucket);
  const at::Tensor sums = tail.to(at::kCPU, at::kDouble);
  const double loss = sums[0].item<double>() / labels;
  stop_agreed_ = sums[1].item<double>() > 0;
  if (!std::isfinite(loss)) {
    throw std::domain_error("the loss is " + std::to_string(loss) + " at step " +
                            std::to_string(step + 1));
  }
  return loss;
}

// Unscales and clips the gradients and steps the optimiser.  Returns false
// when an fp16 overflow skipped the update (the loss scale is halved).
bool Run::ApplyUpdate(int64_t step, double* grad_norm) {
  at::NoGradGuard no_grad;
  // One host sync for the norm, not one per adapter tensor.
  std::vector<at::Tensor> squares;
  squares.reserve(params_.size());
  for (auto& p : params_) squares.push_back(p.grad().to(at::kDouble).pow(2).sum());
  *grad_norm = std::sqrt(at::stack(squares).sum().item<double>()) / state_.loss_scale;
  if (!std::isfinite(*grad_norm)) {
    if (config_.precision != Precision::kFp16)
      throw std::domain_error("the gradient is not finite at step " + std::to_string(step + 1));
    // fp16 overflow: skip this update and try a smaller scale.
    state_.loss_scale = std::max(1.0, state_.loss_scale / 2);
    state_.good_steps = 0;
    return false;
  }
  double factor = 1.0 / state_.loss_scale;
  if (config_.optim.max_grad_norm > 0 && *grad_norm > config_.optim.max_grad_norm)
    factor *= config_.optim.max_grad_norm / (*grad_norm + 1e-6);
  if (factor != 1.0)
    for (auto& p : params_) p.grad().mul_(factor);
  optimizer_->step();
  if (config_.precision == Precision::kFp16 && ++state_.good_steps == 2000) {
    state_.loss_scale *= 2;
    state_.good_steps = 0;
  }
  return true;
}

void Run::ReportStep(double loss, double lr, double grad_norm, int64_t tokens, double seconds,
                     bool skipped) {
  if (rank0() && (state_.step % config_.log_every == 0 || state_.step == plan_->total_steps())) {
    const double elapsed = Seconds(Clock::now() - started_);
    const double per_step = train_seconds_ / static_cast<double>(state_.step - start_step_);
    namespace field = events::field;
    nlohmann::json event = MakeEvent(
        events::Kind::kStep,
        {{field::kStep, state_.step},
         {field::kTotalSteps, plan_->total_steps()},
         {field::kEpoch, state_.epoch},
         {field::kLoss, loss},
         {field::kLr, lr},
         {field::kGradNorm, grad_norm},
         {"tokens", tokens},
         {field::kTokensPerS, static_cast<double>(tokens) / seconds},
         {"step_s", seconds},
         {"elapsed_s", elapsed},
         {field::kEtaS, per_step * static_cast<double>(plan_->total_steps() - state_.step)},
         {field::kPeakRssBytes, PeakRssBytes()}});
    if (config_.precision == Precision::kFp16) {
      event["loss_scale"] = state_.loss_scale;
      event["skipped"] = skipped;
    }
    sink_.Emit(event);
  }
}

double Run::Evaluate() {
  auto& model = *loaded_.model;
  model.eval();
  at::NoGradGuard no_grad;
  const int64_t micro = std::max<int64_t>(1, plan_->micro_batch());
  const auto n = static_cast<int64_t>(eval_.examples.size());
  double loss = 0, labels = 0;
  std::vector<int64_t> indices;
  auto flush = [&] {
    if (indices.empty()) return;
    loss += LossSum(model, Collate(eval_, indices, pad_id_, device_)).item<double>();
    labels += static_cast<double>(SumLabels(eval_, indices));
    indices.clear();
  };
  for (int64_t i = collective_->rank(); i < n; i += collective_->world_size()) {
    indices.push_back(i);
    if (static_cast<int64_t>(indices.size()) == micro) flush();
  }
  flush();
  at::Tensor sums = at::tensor({loss, labels}, at::TensorOptions(device_).dtype(at::kDouble));
  collective_->AllReduceSum({sums});
  model.train();
  const double mean = sums[0].item<double>() / sums[1].item<double>();
  if (rank0())
    sink_.Emit(MakeEvent(events::Kind::kEval, {{events::field::kStep, state_.step},
                                               {events::field::kLoss, mean},
                                               {events::field::kPerplexity, std::exp(mean)},
                                               {events::field::kExamples, n},
                                               {"label_tokens", sums[1].item<double>()}}));
  return mean;
}

void Run::Save(bool final_save) {
  if (!rank0()) return;
  // Refuses (std::domain_error) a checkpoint whose weights are not finite.
  last_checkpoint_ = SaveCheckpoint(config_.output_dir, config_, *loaded_.model, *optimizer_,
                                    state_, config_.keep_checkpoints);
  sink_.Emit(MakeEvent(events::Kind::kCheckpoint, {{events::field::kStep, state_.step},
                                                   {events::field::kPath, last_checkpoint_},
                                                   {events::field::kFinal, final_save}}));
}

void Run::WriteOutputs() {
  if (!rank0()) return;
  auto& model = *loaded_.model;
  if (config_.method.name == TrainMethod::kFull) {
    SaveTrainedWeights(model, (fs::path(config_.output_dir) / "model.safetensors").string());
  } else {
    peft::SaveAdapter(model, ToAdapterConfig(config_),
                      (fs::path(config_.output_dir) / "adapter").string());
  }
}

// The config as run (defaults filled in), beside the checkpoints.
void Run::WriteRunConfig() {
  fs::create_directories(config_.output_dir);
  std::string text = ConfigToJson(config_).dump(2) + "\n";
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  model::WriteFileAtomically((fs::path(config_.output_dir) / "train_config.json").string(),
                             std::span(&bytes, 1));
}

void Run::ReportStarted() {
  auto& model = *loaded_.model;
  int64_t total = 0, trainable = 0;
  for (const auto& p : model.parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  if (config_.method.name != TrainMethod::kFull)
    total -= trainable;  // adapters are not model weights
  // Packed layers hold their weights as buffers of blocks, not parameters.
  total += ::diablo::model::PackedWeightElements(model);
  sink_.Emit(MakeEvent(
      events::Kind::kStarted,
      {{"method", FineTuneMethodName(config_.method.name)},
       {"model", config_.model},
       {"config", options_.config_path},
       {"output_dir", config_.output_dir},
       {"trainable_parameters", trainable},
       {"model_parameters", total},
       {"trainable_percent", 100.0 * static_cast<double>(trainable) / static_cast<double>(total)},
       {events::field::kTotalSteps, plan_->total_steps()},
       {events::field::kStartStep, state_.step},
       {"resumed_from", resumed_from_},
       {"train_examples", train_.stats.examples},
       {"train_tokens", train_.stats.tokens},
       {"train_label_tokens", train_.stats.label_tokens},
       {"truncated", train_.stats.truncated},
       {"dropped", train_.stats.dropped},
       {"eval_examples", eval_.stats.examples},
       {"data_format", DataFormatName(train_.format)},
       {"world_size", collective_->world_size()},
       {"device", device_.str()},
       {"precision", PrecisionName(config_.precision)},
       {"base_weights", BaseWeightsName(config_.base_weights)},
       {"threads", at::get_num_threads()}}));
}

void Run::ReportFinished(double eval_loss) {
  namespace field = events::field;
  nlohmann::json done = MakeEvent(
      events::Kind::kFinished,
      {{field::kStep, state_.step},
       {field::kLoss, last_loss_},
       {"elapsed_s", Seconds(Clock::now() - started_)},
       {"train_s", train_seconds_},
       {"tokens", tokens_trained_},
       {field::kTokensPerS,
        train_seconds_ > 0 ? static_cast<double>(tokens_trained_) / train_seconds_ : 0.0},
       {field::kPeakRssBytes, PeakRssBytes()},
       {"checkpoint", last_checkpoint_},
       {"output", (fs::path(config_.output_dir) /
                   (config_.method.name == TrainMethod::kFull ? "model.safetensors" : "adapter"))
                      .string()}});
  if (std::isfinite(eval_loss)) done["eval_loss"] = eval_loss;
  sink_.Emit(done);
}

int Run::Execute() {
  started_ = Clock::now();
  Setup();
  if (rank0()) {
    WriteRunConfig();
    ReportStarted();
  }

  g_stop_requested = false;
  auto previous_int = std::signal(SIGINT, RequestStop);
  auto previous_term = std::signal(SIGTERM, RequestStop);
  struct RestoreSignals {
    decltype(previous_int) i, t;
    ~RestoreSignals() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore{previous_int, previous_term};

  const int64_t total = plan_->total_steps();
  for (int64_t step = state_.step; step < total; ++step) {
    if (StopRequested()) {
      if (state_.step > 0) Save(false);
      if (rank0())
        sink_.Emit(Error(events::ErrorCode::kInterrupted,
                         "stopped by a signal after step " + std::to_string(state_.step) +
                             (collective_->world_size() > 1 ? " (every rank stopped there)" : "") +
                             "; continue with --resume"));
      return kExitInterrupted;
    }
    Step(step);
    const bool last = state_.step == total;
    if (!eval_.examples.empty() && config_.eval_every > 0 &&
        state_.step % config_.eval_every == 0 && !last)
      Evaluate();
    const bool stop =
        options_.stop_after_steps > 0 && state_.step - start_step_ >= options_.stop_after_steps;
    if (!last && (stop || (config_.save_every > 0 && state_.step % config_.save_every == 0)))
      Save(false);
    if (stop && !last) {
      if (rank0())
        sink_.Emit(
            MakeEvent(events::Kind::kStopped,
                      {{events::field::kStep, state_.step},
                       {events::field::kTotalSteps, total},
                       {"checkpoint", last_checkpoint_},
                       {events::field::kMessage, "stopped as asked; continue with --resume"}}));
      return kExitOk;
    }
  }
  double eval_loss = NAN;
  if (!eval_.examples.empty()) eval_loss = Evaluate();
  Save(true);
  WriteOutputs();
  if (rank0()) ReportFinished(eval_loss);
  return kExitOk;
}

}  // namespace

int RunTraining(const TrainConfig& config, const RunOptions& options, EventSink& sink) {
  Run run(config, options, sink);
  try {
    return run.Execute();
  } catch (const c10::OutOfMemoryError&) {
    sink.Emit(MakeErrorEvent(events::ErrorCode::kOutOfMemory,
                             OutOfMemoryMessage(config, run.world_size(), "device")));
    return kExitOutOfMemory;
  } catch (const std::bad_alloc&) {
    sink.Emit(MakeErrorEvent(events::ErrorCode::kOutOfMemory,
                             OutOfMemoryMessage(config, run.world_size(), "host")));
    return kExitOutOfMemory;
  } catch (const std::domain_error& e) {
    sink.Emit(MakeErrorEvent(events::ErrorCode::kNonFinite,
                             std::string(e.what()) +
                                 "; stopping (the last checkpoint is kept). Lower optim.lr or "
                                 "set optim.max_grad_norm"));
    return kExitNonFinite;
  } catch (const std::invalid_argument& e) {
    // The job's own inputs: its config, data or files (no usable example, an
    // unreadable model).  The same job fails the same way on any retry.
    sink.Emit(MakeErrorEvent(events::ErrorCode::kBadConfig, e.what()));
    return kExitError;
  } catch (const model::FormatError& e) {
    sink.Emit(MakeErrorEvent(events::ErrorCode::kBadConfig, e.what()));
    return kExitError;
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (IsAllocationFailure(message)) {
      const bool device = message.find("CUDA") != std::string::npos;
      sink.Emit(
          MakeErrorEvent(events::ErrorCode::kOutOfMemory,
                         OutOfMemoryMessage(config, run.world_size(), device ? "device" : "host")));
      return kExitOutOfMemory;
    }
    // LibTorch's what() carries a C++ backtrace; users need the message.
    sink.Emit(MakeErrorEvent(events::ErrorCode::kFailed, message));
    return kExitError;
  } catch (const std::exception& e) {
    sink.Emit(MakeErrorEvent(events::ErrorCode::kFailed, e.what()));
    return kExitError;
  }
}

}  // namespace diablo::train
