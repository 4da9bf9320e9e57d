"""Reports an auditor accepts (drwatch report, verify-report) and the status page at / (docs/reports.md)."""
