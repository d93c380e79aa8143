// C++ tests of the LibTorch API (run by CTest): the ops against a plain float64
// recurrence, decode against the chunked op, and error handling.
#include <lightning_attn.h>

#include <c10/util/Exception.h>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const auto ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  return ((ad - bd).norm() / bd.norm()).item<double>();
}

// S_t = lambda S_{t-1} + k_t v_t^T; o_t = scale S_t^T q_t, in float64, token by token.
std::pair<at::Tensor, at::Tensor> reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& slope, double scale, const at::Tensor& h0) {
  const auto qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  const auto lam = at::exp(-slope.to(at::kDouble)).view({1, -1, 1, 1});
  auto S = h0.to(at::kDouble).clone();
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < q.size(1); ++t) {
    S = lam * S + kd.select(1, t).unsqueeze(-1) * vd.select(1, t).unsqueeze(-2);
    outs.push_back(scale * at::matmul(qd.select(1, t).unsqueeze(-2), S).squeeze(-2));
  }
  return {at::stack(outs, 1), S};
}

bool throws_value_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
  } catch (const c10::ValueError& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  }
  return false;
}

}  // namespace

int main() {
  at::manual_seed(0);
  const int64_t B = 2, T = 131, H = 3, Dk = 32, Dv = 48;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto q = (at::randn({B, T, H, Dk}) * 0.2).to(dtype), k = at::randn({B, T, H, Dk}).to(dtype),
               v = at::randn({B, T, H, Dv}).to(dtype);
    const auto slope = at::rand({H}) * 0.2, h0 = at::randn({B, H, Dk, Dv});
    auto [o, hT] = lightning_attn::forward(q, k, v, slope, 0.5, h0, std::nullopt, false, true);
    auto [ro, rh] = reference(q, k, v, slope, 0.5, h0);
    const double tol = dtype == at::kFloat ? 1e-5 : 8e-3;
    const std::string name = dtype == at::kFloat ? "float32" : "bfloat16";
    expect(rel_err(o, ro) < tol, "forward o matches the recurrence (" + name + ")");
    expect(rel_err(hT, rh) < tol, "forward final state matches the recurrence (" + name + ")");

    auto state = h0.clone();
    std::vector<at::Tensor> steps;
    for (int64_t t = 0; t < T; ++t)
      steps.push_back(lightning_attn::decode(q.select(1, t), k.select(1, t), v.select(1, t), state, slope, 0.5));
    expect(rel_err(at::stack(steps, 1), o) < tol, "decode steps equal the chunked forward (" + name + ")");
    expect(rel_err(state, hT) < 1e-4, "decode state equals the final state (" + name + ")");

    // The same prefill from and into rows 3 and 0 of a 4-slot pool: the same o, the final
    // states in those rows, the other rows untouched.
    auto pool = at::randn({4, H, Dk, Dv});
    pool[3].copy_(h0[0]), pool[0].copy_(h0[1]);
    const auto before = pool.clone();
    const auto o_pool = lightning_attn::forward_slots(q, k, v, pool, at::tensor({3, 0}, at::kInt), slope, 0.5);
    expect(at::equal(o_pool, o), "forward_slots o equals forward from the gathered states (" + name + ")");
    expect(at::equal(pool[3], hT[0]) && at::equal(pool[0], hT[1]), "forward_slots writes the final states (" + name + ")");
    expect(at::equal(pool[1], before[1]) && at::equal(pool[2], before[2]), "forward_slots leaves other rows (" + name + ")");

    // Checkpoints every 64 tokens: the final states of the 64- and 128-token prefixes, then the
    // final state (T = 131 ends inside the third).
    auto [o_c, hT_c, ckpt] = lightning_attn::forward_checkpoints(q, k, v, 64, 3, slope, 0.5, h0);
    expect(at::equal(o_c, o) && at::equal(hT_c, hT), "forward_checkpoints o and final state equal forward (" + name + ")");
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t t = 64 * (j + 1);
      auto [ro_j, rh_j] = reference(q.narrow(1, 0, t), k.narrow(1, 0, t), v.narrow(1, 0, t), slope, 0.5, h0);
      expect(rel_err(ckpt.select(1, j), rh_j) < tol, "forward_checkpoints state after " + std::to_string(t) + " tokens (" + name + ")");
    }
    expect(at::equal(ckpt.select(1, 2), hT), "forward_checkpoints past the end holds the final state (" + name + ")");
  }

  // Backward: a directional derivative of <o, w> by central differences (float64).
  {
    const auto q = at::randn({1, 70, 2, 16}, at::kDouble), k = at::randn({1, 70, 2, 16}, at::kDouble),
               v = at::randn({1, 70, 2, 8}, at::kDouble), w = at::randn({1, 70, 2, 8}, at::kDouble),
               dir = at::randn({1, 70, 2, 16}, at::kDouble);
    const auto slope = at::rand({2}) * 0.3;
    auto [dq, dk, dv, dh0] = lightning_attn::backward(w, q, k, v, slope, 1.0);
    const double eps = 1e-6;
    auto f = [&](const at::Tensor& kk) {
      return (std::get<0>(lightning_attn::forward(q, kk, v, slope, 1.0)) * w).sum().item<double>();
    };
    const double fd = (f(k + eps * dir) - f(k - eps * dir)) / (2 * eps);
    const double an = (dk * dir).sum().item<double>();
    expect(std::abs(fd - an) < 1e-6 * std::max(1.0, std::abs(an)), "backward dk matches finite differences");
    expect(dh0.numel() == 0, "no initial state gives an empty d_initial_state");
  }

  {
    const auto x = at::randn({4, 33}) * 2;
    auto [y, rstd] = lightning_attn::srms_norm_forward(x, 1e-6);
    const auto ref = x * at::rsqrt(x.square().mean(-1, true) + 1e-6);
    expect(rel_err(y, ref) < 1e-6, "srms_norm forward");
    expect(lightning_attn::srms_norm_backward(at::ones_like(x), x, rstd).sizes() == x.sizes(),
           "srms_norm backward shape");
  }

  const auto q = at::randn({2, 10, 3, 8}), v = at::randn({2, 10, 3, 4});
  expect(throws_value_error([&] { lightning_attn::forward(q, q, v, at::rand({5})); }, "slope must have shape [H]"),
         "bad slope shape raises a ValueError naming slope");
  expect(throws_value_error([&] { lightning_attn::forward(q.view({20, 3, 8}), q, v); }, "q must be a 4-D tensor"),
         "bad rank raises a ValueError naming q");
  expect(throws_value_error(
             [&] {
               lightning_attn::forward(q, q, v, std::nullopt, 1.0, std::nullopt,
                                       at::tensor({0, 4, 10}, at::kInt));
             },
             "B = 1"),
         "cu_seqlens with B = 2 raises a ValueError");

  std::printf("%s: %d failed\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
