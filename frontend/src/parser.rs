//! Dockerfile parser (BuildKit grammar): directives, continuations, heredocs, JSON vs shell form.
