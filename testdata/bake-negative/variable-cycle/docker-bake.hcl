variable "A" {
  default = "${B}-a"
}
variable "B" {
  default = "${A}-b"
}
target "default" {}
