#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/ops/elementwise/elementwise.h"

namespace engine {

namespace {
thread_local bool g_grad_enabled = true;
}  // namespace

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

namespace {

std::shared_ptr<Node> make_node(const char* name, const std::vector<Tensor>& inputs, int outputs,
                                OutputsBackwardFn backward) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->outputs = outputs;
  node->backward = std::move(backward);
  for (const Tensor& input : inputs) {
    Edge edge;
    if (input.defined() && input.requires_grad()) {
      if (input.grad_fn()) {
        edge.node = input.grad_fn();
        edge.output = input.impl()->grad_output;
      } else {
        edge.leaf = input.impl_ptr();
      }
    }
    node->inputs.push_back(std::move(edge));
  }
  return node;
}

void attach(Tensor& output, const std::shared_ptr<Node>& node, int index) {
  output.impl()->grad_fn = node;
  output.impl()->grad_output = index;
  output.impl()->requires_grad = true;
}

}  // namespace

void record(const char* name, Tensor& output, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return;
  auto one_output = [backward = std::move(backward)](const std::vector<Tensor>& grads) { return backward(grads[0]); };
  attach(output, make_node(name, inputs, 1, std::move(one_output)), 0);
}

void record_outputs(const char* name, std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                    OutputsBackwardFn backward) {
  if (!needs_grad(inputs)) return;
  const auto node = make_node(name, inputs, static_cast<int>(outputs.size()), std::move(backward));
  for (size_t i = 0; i < outputs.size(); ++i) attach(outputs[i], node, static_cast<int>(i));
}

namespace {

// Reverse topological order (outputs before inputs), iteratively so that deep
// graphs cannot overflow the stack.
std::vector<Node*> order_nodes(Node* root) {
  std::vector<Node*> post_order;
  std::unordered_set<Node*> visited{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next_input] = stack.back();
    if (next_input < node->inputs.size()) {
      Node* child = node->inputs[next_input++].node.get();
      if (child && visited.insert(child).second) stack.push_back({child, 0});
      continue;
    }
    post_order.push_back(node);
    stack.pop_back();
  }
  return {post_order.rbegin(), post_order.rend()};
}

void accumulate(Tensor& slot, const Tensor& grad) {
  slot = slot.defined() ? add(slot, grad) : grad;
}

// True when nothing but `grad` itself can reach its memory: no other handle
// on the tensor (the backward pass's own list holds this one) or on its
// storage, and the tensor covers all of that storage, contiguously.
bool sole_owner(const Tensor& grad) {
  return grad.impl_ptr().use_count() == 1 && grad.storage().use_count() == 1 && grad.is_contiguous() &&
         grad.offset() == 0 && grad.storage()->nbytes() == grad.nbytes();
}

void accumulate_into_leaf(TensorImpl* leaf, const Tensor& grad) {
  check(grad.shape() == leaf->shape, "autograd: gradient {} does not match leaf '{}' of shape {}",
        ShapeText{grad.shape()}, leaf->name, ShapeText{leaf->shape});
  // Caught here, at the op whose backward got it wrong, rather than by the
  // optimizer steps later.
  check(grad.dtype() == leaf->dtype, "autograd: {} gradient for {} leaf '{}'", dtype_name(grad.dtype()),
        dtype_name(leaf->dtype), leaf->name);
  // The leaf's gradient must be a buffer of its own, so that the optimizer's
  // in-place maths never write into an op's output or a saved tensor. A fresh
  // gradient that nothing else holds is one already (most are: each weight's
  // GEMM output); a shared one (add's backward hands the same tensor to both
  // inputs) is copied. (A kernel and an allocation per parameter and step.)
  if (leaf->grad.defined()) leaf->grad = add(leaf->grad, grad);
  else leaf->grad = sole_owner(grad) ? grad.detach() : grad.clone();
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& seed) {
  check(root.requires_grad(), "backward() called on a tensor that does not require grad");
  check_same_shape(root, seed, "backward seed");
  check(seed.dtype() == root.dtype(), "backward seed: {}, for a {} tensor", dtype_name(seed.dtype()),
        dtype_name(root.dtype()));
  NoGradGuard no_grad;  // the backward pass itself is not recorded
  if (!root.grad_fn()) {
    // The caller still holds the seed, and sole_owner() would take its one
    // handle for the backward pass's own: the leaf gets a copy.
    accumulate_into_leaf(root.impl(), seed.clone());
    return;
  }
  // The gradients that reached each node so far, one slot per output.
  std::unordered_map<Node*, std::vector<Tensor>> pending;
  auto slot = [&pending](Node* node, int output) -> Tensor& {
    std::vector<Tensor>& grads = pending[node];
    grads.resize(static_cast<size_t>(node->outputs));
    return grads[static_cast<size_t>(output)];
  };
  slot(root.grad_fn().get(), root.impl()->grad_output) = seed;
  for (Node* node : order_nodes(root.grad_fn().get())) {
    auto found = pending.find(node);
    if (found == pending.end()) continue;  // no gradient flowed here
    const std::vector<Tensor> grad_outputs = std::move(found->second);
    pending.erase(found);
    std::vector<Tensor> grads = node->backward(grad_outputs);
    check(grads.size() == node->inputs.size(), "autograd: op '{}' returned {} gradients for {} inputs",
          node->name, grads.size(), node->inputs.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      const Edge& edge = node->inputs[i];
      if (!grads[i].defined()) continue;
      if (edge.node) accumulate(slot(edge.node.get(), edge.output), grads[i]);
      else if (edge.leaf) accumulate_into_leaf(edge.leaf.get(), grads[i]);
    }
  }
}

}  // namespace engine
