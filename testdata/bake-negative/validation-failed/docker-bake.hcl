variable "ENV" {
  default = "qa"
  validation {
    condition     = contains(["dev", "prod"], ENV)
    error_message = "ENV must be dev or prod, not ${ENV}"
  }
}
target "default" {}
