/*
 * Loads the Vulkan (SPIR-V) codegen into the apache-tvm 0.26.0 wheel, which was built with
 * USE_VULKAN=OFF. The codegen sources of the wheel's own commit are compiled beside this file
 * into libtvm_vulkan_codegen.so; loading it (tvm_factory_vulkan, through the `tvm.backends`
 * entry point) registers what upstream registers in target_kind.cc under TVM_ENABLE_SPIRV.
 * The target kind "vulkan" itself is already in the wheel and is not registered again.
 *
 * The codegen calls five functions that libtvm_compiler.so defines but does not export (it is
 * built with -fvisibility=hidden), so they are defined again here, behaving as upstream's.
 * Each is small and has no state of its own, so two copies cannot disagree.
 */
#include <tvm/ffi/function.h>
#include <tvm/ir/transform.h>
#include <tvm/tirx/expr.h>
#include <tvm/tirx/op.h>
#include <tvm/tirx/stmt.h>

#include <string>
#include <utility>

#include "target/intrin_rule.h"
#include "tirx/transform/ir_utils.h"

namespace tvm {
namespace transform {
// Original: src/ir/transform.cc (runs the pass in the current PassContext). Its two-argument
// overload, which does the work (instruments, pass skipping), is hidden as well, so this goes
// through the global function the wheel registers for Python, "transform.RunPass", which calls
// the wheel's own Pass::operator()(IRModule) and so behaves exactly as the wheel does.
IRModule Pass::operator()(IRModule mod) const {
  static const ffi::Function run_pass = ffi::Function::GetGlobalRequired("transform.RunPass");
  return run_pass(*this, std::move(mod)).cast<IRModule>();
}
}  // namespace transform

namespace tirx {
// Original: src/tirx/ir/stmt.cc. A loop steps by one when it has no step or a step of 1.
bool ForNode::HasTrivialStep() const { return !step.has_value() || is_one(*step); }

// Original: src/tirx/transform/ir_utils.cc. The storage scope ("global", "shared", "local",
// ...) is carried by the type of a buffer's data variable: a BufferType or a PointerType.
ffi::String GetPtrStorageScope(Var buffer_var) {
  if (const auto* buffer_type = buffer_var->ty.as<BufferTypeNode>()) {
    return buffer_type->storage_scope;
  }
  const auto* pointer_type = buffer_var->ty.as<PointerTypeNode>();
  TVM_FFI_ICHECK(pointer_type) << "buffer variable " << buffer_var->name
                               << " has neither a buffer nor a pointer type";
  return pointer_type->storage_scope;
}

// Original: src/tirx/transform/ir_utils.cc. A wmma fragment shape is written "m, n, k"; matrix A
// is m x k, matrix B k x n and the accumulator m x n. Any other scope has no fragment: (0, 0).
std::pair<int32_t, int32_t> GetWmmaFragmentDimSize(const std::string& shape_str,
                                                   const std::string& scope) {
  int32_t dims[3];
  size_t begin = 0;
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? shape_str.find(", ", begin) : std::string::npos;
    std::string field = begin < shape_str.size() ? shape_str.substr(begin, end - begin) : "";
    try {
      dims[i] = std::stoi(field);
    } catch (const std::exception&) {
      TVM_FFI_THROW(InternalError) << "Cannot convert \"" << field << "\" to int";
    }
    begin = end == std::string::npos ? shape_str.size() : end + 2;
  }
  const int32_t m = dims[0], n = dims[1], k = dims[2];
  if (scope == "wmma.matrix_a") return {m, k};
  if (scope == "wmma.matrix_b") return {k, n};
  if (scope == "wmma.accumulator") return {m, n};
  return {0, 0};
}
}  // namespace tirx

namespace codegen {
namespace intrin {
// Original: src/target/intrin_rule.cc. erf has no SPIR-V (GLSL.std.450) instruction, so the
// Vulkan rules lower it to TVM's polynomial approximation, which exists for fp16 and fp32 only.
PrimExpr DispatchFastErf(const PrimExpr& e) {
  const auto* call = e.as<CallNode>();
  TVM_FFI_ICHECK(call != nullptr && call->args.size() == 1);
  PrimExpr arg = call->args[0].as_or_throw<PrimExpr>();
  PrimType type = arg.ty();
  if (!type.MatchesCode(DLDataTypeCode::kDLFloat) || (type.bits() != 16 && type.bits() != 32)) {
    TVM_FFI_THROW(InternalError) << "fast_erf supports float16 and float32 only, not " << type;
  }
  return fast_erf_float_expr(arg, type.bits());
}
}  // namespace intrin

// Defined in the codegen sources (build_vulkan.cc and intrin_rule_spirv.cc).
void RegisterVulkanCodegen();
namespace spirv {
void RegisterVulkanIntrinRules();
}  // namespace spirv
}  // namespace codegen
}  // namespace tvm

// What upstream's target_kind.cc does when TVM_ENABLE_SPIRV is set, run when the library loads.
TVM_FFI_STATIC_INIT_BLOCK() {
  tvm::codegen::spirv::RegisterVulkanIntrinRules();
  tvm::codegen::RegisterVulkanCodegen();
}
