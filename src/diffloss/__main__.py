from diffloss.cli import main

main()
