from rewrite.run import main

main()
