"""Terraform: the ``terraform_state`` validator (:mod:`.validator`), its config (:mod:`.config`), reading and
judging the state (:mod:`.state`) and the S3 backend's bucket and locking checks (:mod:`.locking`)."""
