from gracectl.cli import main

main()
