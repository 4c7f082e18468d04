variable "TAG" {
  default = "dev"
  description = "image tag"
}
variable "PLATFORMS" {
  type    = list(string)
  default = ["linux/amd64"]
}
variable "REPLICAS" {
  type    = number
  default = 1
  validation {
    condition     = REPLICAS > 0
    error_message = "REPLICAS must be positive"
  }
}
variable "PUSH" {
  default = false
}
variable "REGISTRY" {
  default = "registry.example/${lower("TEAM")}"
}
GLOBAL = "g-${TAG}"

target "default" {
  tags      = ["${REGISTRY}/app:${TAG}", "${REGISTRY}/app:${sanitize("feature/x.y")}"]
  platforms = PLATFORMS
  args = {
    REPLICAS   = REPLICAS * 2
    PUSH       = PUSH ? "yes" : "no"
    GLOBAL     = GLOBAL
    JOINED     = join(",", sort(["b", "a"]))
    FORMATTED  = format("%s-%03d", "v", 7)
    DATE       = formatdate("YYYY-MM-DD", "2024-03-05T07:08:09Z")
    SEMVER_OK  = semvercmp("1.4.2", ">= 1.2, < 2.0")
    SPLIT      = length(split(".", "a.b.c"))
    REPLACED   = regex_replace("a-b-c", "-", "_")
    COALESCED  = coalesce("", "fallback")
    UPPER      = upper(TAG)
    TRIMMED    = trimprefix("v1.2.3", "v")
    JSON       = jsonencode({ a = 1, b = [true, null] })
  }
}
