# rsadecrypt: a PKCS#1 v1.5 ciphertext (base64) and the PEM private key
# it was encrypted to, both from the environment (see cmd.json; the key is
# a throw-away test key, also key.pem / hello.b64 beside this file).
variable "RSA_KEY" {}
variable "CIPHERTEXT" {}

target "default" {
  args = {
    PLAIN = rsadecrypt(CIPHERTEXT, RSA_KEY)
    BROKEN = can(rsadecrypt("bm90IGl0", RSA_KEY))
    BYTES = can(byteslen("abc"))
  }
}
