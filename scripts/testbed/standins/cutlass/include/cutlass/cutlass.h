// STAND-IN for CUTLASS v4.2.1 (gracectl test bed): no code.
