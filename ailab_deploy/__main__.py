from ailab_deploy.cli.main import main

main()
