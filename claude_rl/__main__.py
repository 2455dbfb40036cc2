from claude_rl.cli import main

main()
