"""STAND-IN for triton_kernels.matmul_ogs_details.opt_flags."""

from triton_kernels import standin

make_opt_flags = standin("matmul_ogs_details.opt_flags.make_opt_flags")
update_opt_flags_constraints = standin("matmul_ogs_details.opt_flags.update_opt_flags_constraints")
reset_opt_flags_constraints = standin("matmul_ogs_details.opt_flags.reset_opt_flags_constraints")
