"""Write-side services (HackSoft style): keyword-only, typed, one per action."""
