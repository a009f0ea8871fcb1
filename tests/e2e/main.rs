//! Cross-tool black-box tests.
