//! One segment: a `.log` file of batches and its two indexes.
