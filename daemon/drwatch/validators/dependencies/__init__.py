"""Recovery dependencies: the ``recovery_dependencies`` validator (:mod:`.validator`), its config (:mod:`.config`)
and one probe per dependency kind (:mod:`.probes`: DNS, TCP, HTTPS, KMS, a Terraform state's stored result)."""
