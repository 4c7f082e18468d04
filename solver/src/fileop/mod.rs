//! File actions (copy, mkdir, mkfile, rm) with Docker's COPY/ADD semantics.
