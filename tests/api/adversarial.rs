//! Adversarial tests (being written).
