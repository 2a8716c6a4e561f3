"""Build and test one image: its plan, the build, the smoke suite, benchmarks, its SBOM. Never touches a registry
tag (gracectl.tags ships it); imports from gracectl.releases what to build."""
