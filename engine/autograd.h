// Reverse-mode autograd.
//
// While grad mode is on, every differentiable op that sees an input with
// requires_grad records a Node on its output: the op's backward function plus
// one Edge per input. An Edge points either at the Node that produced that
// input or, for a leaf (a parameter), at the leaf itself. These nodes are the
// tape: Tensor::backward() orders the nodes reachable from the loss
// topologically and replays them in reverse, summing gradients where a tensor
// fed several ops and accumulating into each leaf's .grad(). An op with
// several outputs (split) records one Node for all of them; each output knows
// its index, and the Node's backward receives the gradients of all of them.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

struct Edge {
  std::shared_ptr<Node> node;         // the producer of a non-leaf input, or
  std::shared_ptr<TensorImpl> leaf;   // a leaf that requires grad; both null: no gradient
  int output = 0;                     // which of node's outputs the input is
};

// Receives d(loss)/d(output); returns d(loss)/d(input) for each input in the
// order they were recorded (an undefined Tensor where an input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;
// The same for an op with several outputs: one gradient per output, an
// undefined Tensor for an output that no gradient reached.
using OutputsBackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  std::string name;
  std::vector<Edge> inputs;
  int outputs = 1;
  OutputsBackwardFn backward;
};

// Grad mode is per thread; NoGradGuard turns it off for a scope (evaluation,
// optimizer updates, teacher forwards).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and some input requires grad: the op must record.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a Node to `output` if needs_grad(inputs). Op authors call this after
// computing the forward, capturing in `backward` only what it needs.
void record(const char* name, Tensor& output, const std::vector<Tensor>& inputs, BackwardFn backward);
// The same for an op with several outputs: one Node, whose backward gets all
// their gradients at once (split: one gradient buffer instead of one per piece).
void record_outputs(const char* name, std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                    OutputsBackwardFn backward);

// Runs the backward pass from `root` seeded with `seed` (same shape as root).
void run_backward(const Tensor& root, const Tensor& seed);

}  // namespace engine
