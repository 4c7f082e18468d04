//! `.dockerignore` files and moby's pattern matcher.
