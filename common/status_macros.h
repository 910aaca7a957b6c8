// Early-return helpers for absl::Status / absl::StatusOr.  Debian's Abseil
// (2022-06) ships none, so the control plane defines exactly these two.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DIABLO_CONCAT_INNER_(a, b) a##b
#define DIABLO_CONCAT_(a, b) DIABLO_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function when it is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status diablo_status_ = (expr);          \
    if (!diablo_status_.ok()) return diablo_status_; \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, Foo());` evaluates Foo() (an absl::StatusOr<T>),
// returns its status when it is not OK, otherwise moves the value into `x`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  DIABLO_ASSIGN_OR_RETURN_IMPL_(DIABLO_CONCAT_(diablo_statusor_, __LINE__), lhs, expr)

#define DIABLO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
