//! Model-based property test (being written).
