//! Tower layer and connection gate (feature `tower`).
